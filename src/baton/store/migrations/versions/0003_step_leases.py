"""Runs remember their runtime; steps carry a lease while a worker executes them (the celery runtime).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("baton_runs") as batch:
        batch.add_column(sa.Column("runtime", sa.String(50), nullable=False, server_default="local"))
    with op.batch_alter_table("baton_steps") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime, nullable=True))
    op.create_index(
        "ix_baton_steps_lease",
        "baton_steps",
        ["lease_owner"],
        sqlite_where=sa.text("lease_owner IS NOT NULL"),
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_baton_steps_lease", "baton_steps")
    with op.batch_alter_table("baton_steps") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
    with op.batch_alter_table("baton_runs") as batch:
        batch.drop_column("runtime")
