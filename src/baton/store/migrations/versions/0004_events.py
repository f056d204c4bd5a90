"""Events: an outbox written with the emitting step's checkpoint, deliveries to subscribers, correlation.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.add_column(sa.Column("correlation_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("trigger_event", sa.String(32), nullable=True))
    op.create_index("ix_baton_runs_correlation", "baton_runs", ["correlation_id"])
    op.create_table(
        "baton_events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("correlation_id", sa.String(32), nullable=False),
        sa.Column("source_run", sa.String(32), nullable=True),
        sa.Column("source_step", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("dispatched_at", sa.DateTime, nullable=True),
        sa.Column("runtime", sa.String(50), nullable=False, server_default="local"),
    )
    op.create_index("ix_baton_events_correlation", "baton_events", ["correlation_id"])
    op.create_index(
        "ix_baton_events_outbox",
        "baton_events",
        ["created_at"],
        sqlite_where=sa.text("dispatched_at IS NULL"),
        postgresql_where=sa.text("dispatched_at IS NULL"),
    )
    op.create_table(
        "baton_subscriptions",
        sa.Column("event_type", sa.String(200), primary_key=True),
        sa.Column("subscriber", sa.String(200), primary_key=True),
        sa.Column("target", sa.String(1000), nullable=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "baton_deliveries",
        sa.Column("event_id", sa.String(32), sa.ForeignKey("baton_events.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subscriber", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("baton_deliveries")
    op.drop_table("baton_subscriptions")
    op.drop_index("ix_baton_events_outbox", "baton_events")
    op.drop_index("ix_baton_events_correlation", "baton_events")
    op.drop_table("baton_events")
    op.drop_index("ix_baton_runs_correlation", "baton_runs")
    with op.batch_alter_table("baton_runs") as batch:
        batch.drop_column("trigger_event")
        batch.drop_column("correlation_id")
