"""Telling the store's trouble (a database restarting, a connection lost) from everything else.

Trouble is waited out: the call is made again once the database answers, for up to `BATON_STORE_RETRY_SECONDS`.
Anything else (a value the database refuses, a bug) is an error of the step, recorded and visible. A process
that had trouble lately also holds back from deciding that others are gone (a lease that ran out while the
database was down says nothing about its holder), for one lease.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

__all__ = ["Patience", "calm_for", "first_line", "is_store_trouble", "note_trouble", "wait_out"]

T = TypeVar("T")
log = logging.getLogger("baton.store")

_PASSING = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})

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
    if psycopg is None or not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False  # a value it cannot store is a DataError, a bug a ProgrammingError: not trouble
    # No SQLSTATE: the connection itself failed (refused, lost). Otherwise only the states that pass: a
    # connection exception, the server shutting down or starting, too many connections, a deadlock or a
    # serialization failure. A cancelled statement, a full disk or a limit exceeded are not waited out.
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in _PASSING


def note_trouble(url: str) -> None:
    """Remember that this process met trouble with the store at `url` just now."""
    _trouble[url] = time.monotonic()


def calm_for(url: str) -> float:
    """Seconds since this process last met trouble with the store at `url` (infinite: never)."""
    since = _trouble.get(url)
    return float("inf") if since is None else time.monotonic() - since


class Patience:
    """The schedule of waiting out the store's trouble, shared by every caller: backoff from 50 ms to 2 s, for
    up to BATON_STORE_RETRY_SECONDS from the first failure, then `StoreUnavailable`."""

    def __init__(self, key: str, first: Exception) -> None:
        from baton.settings import current_settings

        self.key, self.last = key, first
        self.seconds = current_settings().store.retry_seconds
        self.deadline, self.delay = time.monotonic() + self.seconds, 0.05
        log.warning("the run store is in trouble (%s); waiting up to %.0f s for it", first_line(first), self.seconds)

    def failed(self, exc: Exception) -> None:
        """Another try met the trouble (`exc`); anything else is raised by the caller."""
        self.last = exc

    def wait(self) -> float:
        """Seconds to wait before the next try (the trouble is remembered); `StoreUnavailable` when done."""
        from baton.errors import StoreUnavailable

        note_trouble(self.key)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailable(
                f"the run store did not answer for {self.seconds:.0f} s (BATON_STORE_RETRY_SECONDS): "
                f"{first_line(self.last)}"
            ) from self.last
        wait, self.delay = min(self.delay, left), min(self.delay * 2, 2.0)
        return wait

    def recovered(self) -> None:
        """The store answered again."""
        log.warning("the run store answers again")


def wait_out(key: str, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` from a plain thread (never an event loop's), made again while the store at `key` is in
    trouble (see `Patience`). For calls that are safe to repeat (the effect ledger's, a step's model calls
    before its checkpoint)."""
    try:
        return fn(*args)
    except Exception as exc:
        if not is_store_trouble(exc):
            raise
        patience = Patience(key, exc)
    while True:
        time.sleep(patience.wait())
        try:
            result = fn(*args)
        except Exception as again:
            if not is_store_trouble(again):
                raise
            patience.failed(again)
            continue
        patience.recovered()
        return result


def first_line(exc: BaseException) -> str:
    """The first line of what the database said (no traceback, no URL)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # SQLite only
        return None
    return psycopg
