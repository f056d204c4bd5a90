"""Engines for the store: URL handling, SQLite pragmas, JSON handling and migrations."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from baton.errors import UserError

__all__ = ["HEAD_REVISION", "RawJSON", "make_engine", "migrate"]

# The newest migration in migrations/versions; when the database is already there, Alembic is not even loaded.
HEAD_REVISION = "0012"


class RawJSON(str):
    """A string that already holds JSON (a contract's `model_dump_json()`), stored without re-encoding."""

    __slots__ = ()


def _serialize(value: Any) -> str:
    if isinstance(value, RawJSON):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def normalize_url(url: str) -> str:
    """Map the usual spellings of a PostgreSQL URL to the psycopg 3 driver, which baton ships with."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for `url`: SQLite in WAL mode, or PostgreSQL through psycopg 3."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UserError(f"BATON_DATABASE_URL {url!r} is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise UserError(f"BATON_DATABASE_URL: baton stores runs in SQLite or PostgreSQL, not {backend!r}")
    # Room for a supervisor's parallel workers: each holds a connection while it runs, and may borrow one
    # more to record a failure or a model call.
    kwargs: dict[str, Any] = {"json_serializer": _serialize, "pool_size": 10, "max_overflow": 30}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "handle_error", functools.partial(_noted, str(engine.url)))
    return engine


def _noted(key: str, context: Any) -> None:
    # Whatever meets the store's trouble (a read, a claim, a heartbeat), the process remembers it: it holds
    # back from deciding that others are gone while leases may have run out for the same reason.
    from baton.store.trouble import is_store_trouble, note_trouble

    if context.is_disconnect or is_store_trouble(context.original_exception):
        note_trouble(key)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the CLI, the dashboard) read while a run writes. synchronous=NORMAL keeps every
    # committed checkpoint through a crash of the process (SIGKILL included); only a power loss can take the
    # last transactions back. BATON trades that for a commit without an fsync, as most WAL users do.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Checkpoints copy WAL pages back into the database; with a larger WAL (up to ~40 MB) a page that many
    # commits rewrote is copied once, not once per 1,000 pages. That halves the cost of a commit here.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA cache_size=-16000")
    cursor.close()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None


def migrate(engine: Engine) -> None:
    """Bring the database to the newest migration; cheap (one SELECT) when it is already there."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "baton.store:migrations")
    with _migration_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting on an empty database must not both create the tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(7261736)"))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
