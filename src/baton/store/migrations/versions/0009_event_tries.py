"""Events: how many times the outbox tried to hand each over, the last error, and when it tries again.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_events") as batch:
        batch.add_column(sa.Column("tries", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text, nullable=True))
        batch.add_column(sa.Column("retry_at", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("baton_events") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("last_error")
        batch.drop_column("tries")
