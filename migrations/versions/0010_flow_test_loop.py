"""the designer's quality loop: each turn's model calls, and conversation test results

Revision ID: 0010_flow_test_loop
Revises: 0009_turn_lease
Create Date: 2026-12-05 10:00:00

"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0010_flow_test_loop"
down_revision = "0009_turn_lease"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade():
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("llm_calls", JSON, nullable=True))
    op.create_table(
        "flow_test_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("flow_id", sa.String(length=64), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("pass_rate", sa.Float(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("flow_version", sa.String(length=64), nullable=True),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_test_run")),
    )
    op.create_index("ix_flow_test_run_test", "flow_test_run", ["path", "name", "mode", "id"])


def downgrade():
    op.drop_index("ix_flow_test_run_test", table_name="flow_test_run")
    op.drop_table("flow_test_run")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("llm_calls")
