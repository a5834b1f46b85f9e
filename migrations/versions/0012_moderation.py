"""messages keep their turn's moderation decisions (category, score, action)

Revision ID: 0012_moderation
Revises: 0011_merge
Create Date: 2026-12-01 23:40:00

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0012_moderation"
down_revision = "0011_merge"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("message") as batch:
        batch.add_column(
            sa.Column(
                "moderation",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=True,
            )
        )


def downgrade():
    with op.batch_alter_table("message") as batch:
        batch.drop_column("moderation")
