"""Side effects done once (the ledger of idempotency keys), and approvals.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.add_column(sa.Column("approved_step", sa.Integer, nullable=True))
    op.create_table(
        "baton_effects",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("baton_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_idx", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_baton_effects_run", "baton_effects", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_baton_effects_run", table_name="baton_effects")
    op.drop_table("baton_effects")
    with op.batch_alter_table("baton_runs") as batch:
        batch.drop_column("approved_step")
