"""Budgets on model spend: a run's own and an event chain's, with what was spent and what calls in flight hold
(one row a call and budget, so that each hold is given back once).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "baton_budgets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tokens", sa.Integer, nullable=True),
        sa.Column("usd", sa.Float, nullable=True),
        sa.Column("spent_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("spent_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("held_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("held_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "baton_budget_holds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("budget_id", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("step_idx", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("usd", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_baton_budget_holds_run", "baton_budget_holds", ["run_id", "step_idx"])


def downgrade() -> None:
    op.drop_table("baton_budget_holds")
    op.drop_table("baton_budgets")
