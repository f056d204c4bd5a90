"""Rate limits on model calls, shared by every process on the store: a row per limit, one per call in flight.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "baton_rate_limits",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("requests_due", sa.Float, nullable=True),
        sa.Column("tokens_due", sa.Float, nullable=True),
        sa.Column("blocked_until", sa.Float, nullable=True),
    )
    op.create_table(
        "baton_rate_limit_slots",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("holder", sa.String(32), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("baton_rate_limit_slots")
    op.drop_table("baton_rate_limits")
