"""The run store: one engine shared by its parts (`runs`, `steps`, `events`, `effects`, `browse`, `budgets`)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from baton._urls import mask_url
from baton.errors import StoreUnavailable, UserError
from baton.store.browse import Browse
from baton.store.budgets import Budgets
from baton.store.claims import LeaseClaimer
from baton.store.context import StoreContext, utcnow
from baton.store.effects import Effects
from baton.store.engine import make_engine, migrate
from baton.store.events import Events
from baton.store.rows import StepResult
from baton.store.runs import CELERY_OWNER, Runs
from baton.store.steps import Steps
from baton.store.trouble import wait_out
from baton.store.writer import RunWriter

__all__ = ["CELERY_OWNER", "RunStore", "StepResult", "utcnow"]

# PostgreSQL's answer to a connection naming a database it does not have (libpq gives no SQLSTATE for it).
_NO_DATABASE = re.compile(r'database "[^"]*" does not exist')

_Kept = TypeVar("_Kept", RunWriter, LeaseClaimer)
_T = TypeVar("_T")


class RunStore:
    """Runs, steps and attempts in a SQL database (SQLite or PostgreSQL), one code path for both.

    What it keeps is reached through its parts, which share its engine: `runs` (reading, claiming, ending
    and reaping runs), `steps` (claims and leases, attempts, failures, approval), `events`, `effects` and
    `browse`. Writes that belong together go in one `transaction()`, whose connection the parts' methods take
    as `conn=`; the hot path (creating runs, checkpoints) is the `writer()`'s.
    """

    def __init__(self, url: str, *, lease_seconds: float = 60.0) -> None:
        self.engine: Engine = make_engine(url)
        self.url = url
        self.lease = timedelta(seconds=lease_seconds)
        self._local = threading.local()
        # Each kept connection with the thread that keeps it: a thread that ended gives its connections back.
        self._writers: list[tuple[threading.Thread, RunWriter | LeaseClaimer]] = []
        self._writers_lock = threading.Lock()
        try:
            migrate(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if self.engine.dialect.name == "postgresql" and _NO_DATABASE.search(reason):
                # Not the store's trouble to wait out: nothing makes the database but a person.
                parsed = self.engine.url
                where = f"-h {parsed.host or '127.0.0.1'}" + (f" -p {parsed.port}" if parsed.port else "")
                who = f" -U {parsed.username}" if parsed.username else ""
                raise UserError(
                    f"the database of BATON_DATABASE_URL ({self.describe()}) does not exist; create it first: "
                    f"createdb {where}{who} {parsed.database}"
                ) from None
            raise StoreUnavailable(f"cannot reach the run store at {self.describe()}: {reason}") from None
        ctx = StoreContext(self.engine, self.lease, self._kept)
        self.runs = Runs(ctx)
        self.steps = Steps(ctx, self.runs)
        self.events = Events(ctx)
        self.effects = Effects(ctx)
        self.browse = Browse(ctx)
        self.budgets = Budgets(ctx)

    def close(self) -> None:
        """Release the store's connections (and the threads that made its calls for code on a loop)."""
        kept = getattr(self, "_threads", None)
        if kept is not None:
            kept[1].shutdown(wait=False)
            self._threads = None
        with self._writers_lock:
            for _, writer in self._writers:
                writer.close()
            self._writers.clear()
        self._local = threading.local()
        self.engine.dispose()

    def patiently(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args)`, the store's trouble waited out (from a plain thread; see `baton.store.trouble`)."""
        return wait_out(str(self.engine.url), fn, *args)

    def describe(self) -> str:
        """The store's URL without its secrets (a password in its user part or its query), for messages."""
        return mask_url(self.url)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction for writes that belong together: pass the connection to the parts as `conn=`.

        It commits when the block ends and rolls back if it raises (`LostOwnership` included).
        """
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def writer(self, *, scoped: bool = False) -> Iterator[RunWriter]:
        """The hot-path writer (creating runs, checkpoints) of this thread, on a connection it keeps.

        Keeping one connection per thread saves a pool checkout and a reset per run; a connection that
        broke (a database restart) is replaced on the next use. A `scoped` writer is for a short-lived
        thread (a supervisor's worker): its connection goes back to the pool when the block ends.
        """
        if scoped:
            own = self._new_writer()
            try:
                yield own
            finally:
                own.close()
            return
        yield self._kept("writer", self._new_writer)

    def kept_writer(self) -> RunWriter:
        """This thread's hot-path writer, kept for the thread's life (what `writer()` yields)."""
        return self._kept("writer", self._new_writer)

    def _new_writer(self) -> RunWriter:
        connect = self.engine.raw_connection
        return RunWriter(connect(), self.engine.dialect.name, self.lease.total_seconds(), connect)

    def _kept(self, slot: str, make: Callable[[], _Kept]) -> _Kept:
        """This thread's connection-holding object in `slot`, made anew when missing or broken."""
        kept: _Kept | None = getattr(self._local, slot, None)
        if kept is None or kept.broken():
            if kept is not None:
                kept.close()
            kept = make()
            setattr(self._local, slot, kept)
            with self._writers_lock:
                # Threads come and go (a dispatcher that ends when idle, a user's threads): give back the
                # connections of those that ended, so that they never drain the pool.
                alive = []
                for thread, other in self._writers:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                alive.append((threading.current_thread(), kept))
                self._writers = alive
        return kept
