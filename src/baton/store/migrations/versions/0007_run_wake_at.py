"""When a celery run waiting for a retry's countdown is due to move again (what the sweeper waits for).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.add_column(sa.Column("wake_at", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.drop_column("wake_at")
