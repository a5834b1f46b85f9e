"""Merge the conversation-test and console-user branches

Revision ID: 0011_merge
Revises: 0010_flow_test_loop, 0010_user_name
Create Date: 2026-12-01 23:30:00

"""

# revision identifiers, used by Alembic.
revision = "0011_merge"
down_revision = ("0010_flow_test_loop", "0010_user_name")
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
