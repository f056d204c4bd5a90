"""Telling the store's trouble (a database restarting, a connection lost) from everything else.

Trouble is waited out: the call is made again once the database answers, for up to `BATON_STORE_RETRY_SECONDS`.
Anything else (a value the database refuses, a bug) is an error of the step, recorded and visible. A process
that had trouble lately also holds back from deciding that others are gone (a lease that ran out while the
database was down says nothing about its holder), for one lease.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy.exc import DBAPIError

__all__ = ["calm_for", "is_store_trouble", "note_trouble"]

# When this process last met trouble with a store, by the store's URL (monotonic seconds).
_trouble: dict[str, float] = {}


def is_store_trouble(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or answered "not now" (worth waiting out),
    rather than refusing what was asked of it."""
    from baton.errors import StoreUnavailable

    if isinstance(exc, StoreUnavailable):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, sqlite3.OperationalError):
        # Locked or busy past the busy timeout; a missing table or a syntax error is not trouble but a bug.
        text = str(exc).lower()
        return "locked" in text or "busy" in text or "disk i/o" in text
    psycopg = _psycopg()
    # Connection lost or refused, the server shutting down or starting up, a deadlock or a serialization
    # failure: all are OperationalError in psycopg; a value it cannot store is a DataError.
    return psycopg is not None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def note_trouble(url: str) -> None:
    """Remember that this process met trouble with the store at `url` just now."""
    _trouble[url] = time.monotonic()


def calm_for(url: str) -> float:
    """Seconds since this process last met trouble with the store at `url` (infinite: never)."""
    since = _trouble.get(url)
    return float("inf") if since is None else time.monotonic() - since


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # SQLite only
        return None
    return psycopg
