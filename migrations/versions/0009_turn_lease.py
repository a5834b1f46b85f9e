"""turn leases: a contact's turns run one at a time without a row lock held across them

Revision ID: 0009_turn_lease
Revises: 0008_merge
Create Date: 2026-12-01 22:20:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0009_turn_lease"
down_revision = "0008_merge"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "turn_lease",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contact.id"],
            name=op.f("fk_turn_lease_contact_id_contact"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_turn_lease")),
    )


def downgrade():
    op.drop_table("turn_lease")
