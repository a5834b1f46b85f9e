"""Merge the delivery, admin and flow-runtime branches

Revision ID: 0006_merge
Revises: 0003_delivery, 0004_admin, 0005_flow_runtime
Create Date: 2026-11-21 19:30:00

"""

# revision identifiers, used by Alembic.
revision = "0006_merge"
down_revision = ("0003_delivery", "0004_admin", "0005_flow_runtime")
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
