"""Runs, steps and failed attempts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON()


def upgrade() -> None:
    op.create_table(
        "baton_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("target", sa.String(1000), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("input", Json, nullable=False),
        sa.Column("output", Json, nullable=True),
        sa.Column("step_names", Json, nullable=False),
        sa.Column("current_step", sa.Integer, nullable=True),
        sa.Column("current_attempt", sa.Integer, nullable=False),
        sa.Column("current_started_at", sa.DateTime, nullable=True),
        sa.Column("failed_step", sa.String(100), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("claims", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime, nullable=True),
        sa.Column("tokens_in", sa.Integer, nullable=False),
        sa.Column("tokens_out", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        # One b-tree per table instead of a rowid table plus a primary-key index: fewer pages per commit.
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_baton_runs_status",
        "baton_runs",
        ["status", "id"],
        sqlite_where=sa.text("status <> 'succeeded'"),
        postgresql_where=sa.text("status <> 'succeeded'"),
    )
    op.create_index("ix_baton_runs_pipeline", "baton_runs", ["pipeline", "id"])
    op.create_table(
        "baton_steps",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("baton_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("output", Json, nullable=True),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("error_traceback", sa.Text, nullable=True),
        sa.Column("tokens_in", sa.Integer, nullable=False),
        sa.Column("tokens_out", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "baton_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("baton_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_idx", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("error_traceback", sa.Text, nullable=True),
        sa.Column("retried", sa.Boolean, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_baton_attempts_run", "baton_attempts", ["run_id", "step_idx"])


def downgrade() -> None:
    op.drop_table("baton_attempts")
    op.drop_table("baton_steps")
    op.drop_index("ix_baton_runs_pipeline", "baton_runs")
    op.drop_index("ix_baton_runs_status", "baton_runs")
    op.drop_table("baton_runs")
