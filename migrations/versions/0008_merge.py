"""Merge the Studio and handover branches

Revision ID: 0008_merge
Revises: 0007_studio, 0007_handover
Create Date: 2026-11-21 20:12:00

"""

# revision identifiers, used by Alembic.
revision = "0008_merge"
down_revision = ("0007_studio", "0007_handover")
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
