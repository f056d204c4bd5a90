"""The dashboard: its filter on the step a run failed at, and each run's pattern kind.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.add_column(sa.Column("kind", sa.String(20), nullable=True))
    op.create_index(
        "ix_baton_runs_failed_step",
        "baton_runs",
        ["failed_step", "id"],
        sqlite_where=sa.text("failed_step IS NOT NULL"),
        postgresql_where=sa.text("failed_step IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_baton_runs_failed_step", table_name="baton_runs")
    with op.batch_alter_table("baton_runs") as batch:
        batch.drop_column("kind")
