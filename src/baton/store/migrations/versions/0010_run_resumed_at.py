"""When a person last resumed or retried a run: its duration counts from there, its first start stays.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.add_column(sa.Column("resumed_at", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.drop_column("resumed_at")
