"""console users get a display name: the inbox shows agents by name

Revision ID: 0010_user_name
Revises: 0009_turn_lease
Create Date: 2026-12-03 10:00:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010_user_name"
down_revision = "0009_turn_lease"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("admin_user") as batch:
        batch.add_column(sa.Column("name", sa.String(length=100), nullable=True))


def downgrade():
    with op.batch_alter_table("admin_user") as batch:
        batch.drop_column("name")
