"""Side effects: the shape of what an effect's act returns, so that a person's `--result` is checked.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_effects") as batch:
        batch.add_column(sa.Column("result_schema", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("baton_effects") as batch:
        batch.drop_column("result_schema")
