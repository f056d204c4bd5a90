"""The dashboard's filter on the step a run failed at.

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
    op.create_index(
        "ix_baton_runs_failed_step",
        "baton_runs",
        ["failed_step", "id"],
        sqlite_where=sa.text("failed_step IS NOT NULL"),
        postgresql_where=sa.text("failed_step IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_baton_runs_failed_step", table_name="baton_runs")
