"""Model calls, costs, the tokens that cross boundaries, and a model's raw answer on errors.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.add_column(sa.Column("cost_usd", sa.Float, nullable=True, server_default="0"))
        batch.add_column(sa.Column("input_boundary_tokens", sa.Integer, nullable=True))
    with op.batch_alter_table("baton_steps") as batch:
        batch.add_column(sa.Column("cost_usd", sa.Float, nullable=True, server_default="0"))
        batch.add_column(sa.Column("boundary_tokens", sa.Integer, nullable=True))
        batch.add_column(sa.Column("error_raw", sa.Text, nullable=True))
        batch.add_column(sa.Column("error_details", sa.JSON, nullable=True))
    op.create_table(
        "baton_llm_calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("baton_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_idx", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_baton_llm_calls_run", "baton_llm_calls", ["run_id", "step_idx"])


def downgrade() -> None:
    op.drop_index("ix_baton_llm_calls_run", "baton_llm_calls")
    op.drop_table("baton_llm_calls")
    with op.batch_alter_table("baton_steps") as batch:
        batch.drop_column("error_details")
        batch.drop_column("error_raw")
        batch.drop_column("boundary_tokens")
        batch.drop_column("cost_usd")
    with op.batch_alter_table("baton_runs") as batch:
        batch.drop_column("input_boundary_tokens")
        batch.drop_column("cost_usd")
