"""Alembic migrations of the run store; applied by `baton.store.open_store`."""
