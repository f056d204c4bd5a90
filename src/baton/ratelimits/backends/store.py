"""Limits kept in the run store: a row per meter, locked while a call takes its capacity.

Each step is one short transaction. It writes first (the meters' rows, made when missing), which on SQLite
takes the database's write lock and on PostgreSQL leaves the rows to a `SELECT ... FOR UPDATE` in name order:
either way two processes take turns, so they never both take the last slot or the same moment of a pace.
Times are seconds since the epoch: PostgreSQL's clock (processes on several machines agree on it), or on
SQLite, whose processes share a machine, that machine's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from baton.ratelimits.backend import Backend, Taken
from baton.ratelimits.meter import Meter, allowed_at, due_after_block, next_due
from baton.runtime.aio import in_store_thread
from baton.store import RunStore
from baton.store.schema import rate_limit_slots as slots
from baton.store.schema import rate_limits as limits

__all__ = ["StoreBackend"]

T = TypeVar("T")


class StoreBackend(Backend):
    """Limits shared through `store`'s database (a lease of `lease` seconds on each slot)."""

    def __init__(self, store: RunStore, *, lease: float) -> None:
        self.store, self.lease = store, lease
        self._postgres = store.engine.dialect.name == "postgresql"

    async def take(self, meters: Sequence[Meter], *, tokens: int, holder: str) -> Taken:
        """See `Backend.take`."""
        return await self._run(self._take, meters, tokens, holder)

    async def renew(self, meters: Sequence[Meter], *, holder: str) -> None:
        """See `Backend.renew`."""
        await self._run(self._renew, meters, holder)

    async def finish(self, meters: Sequence[Meter], *, holder: str, tokens: int) -> None:
        """See `Backend.finish`."""
        await self._run(self._finish, meters, holder, tokens)

    async def block(self, meters: Sequence[Meter], *, seconds: float) -> None:
        """See `Backend.block`."""
        await self._run(self._block, meters, seconds)

    async def _run(self, step: Callable[..., T], *args: Any) -> T:
        # On the store's threads, its trouble (a database restarting) waited out as for every store call.
        return await in_store_thread(self.store, self.store.patiently, step, *args)

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self.store.engine.begin() as c:
            if self._postgres:
                # A limit's state is worth a moment: a commit lost to a crash of the database costs a few
                # calls' pacing, and a commit that waits for the disk costs every call milliseconds.
                c.execute(text("SET LOCAL synchronous_commit = off"))
            yield c

    def _locked(self, c: Connection, meters: Sequence[Meter]) -> tuple[dict[str, Any], float]:
        """The meters' rows, locked for this transaction, and the time now."""
        names = sorted({m.name for m in meters})
        insert = (postgresql.insert if self._postgres else sqlite.insert)(limits)
        c.execute(insert.values([{"name": name} for name in names]).on_conflict_do_nothing())
        rows = c.execute(select(limits).where(limits.c.name.in_(names)).order_by(limits.c.name).with_for_update())
        return {row.name: row for row in rows}, self._now(c)

    def _take(self, meters: Sequence[Meter], tokens: int, holder: str) -> Taken:
        with self._begin() as c:
            rows, now = self._locked(c, meters)
            wait, full = 0.0, False
            for m in meters:
                blocked = rows[m.name].blocked_until or 0.0
                wait = max(wait, blocked - now)
                if m.slots:
                    c.execute(delete(slots).where(slots.c.name == m.name, slots.c.expires_at <= now))
                    held, first = c.execute(
                        select(func.count(), func.min(slots.c.expires_at)).where(slots.c.name == m.name)
                    ).one()
                    if held >= m.slots:
                        full, wait = True, max(wait, first - now)
            if wait > 0 or full:
                return Taken(False, wait, full)
            # Everything has room: the call starts when the last of its paces allows it.
            start = now
            for m in meters:
                row = rows[m.name]
                if m.requests:
                    start = max(start, allowed_at(row.requests_due or 0.0, now, 1, m.requests))
                if m.tokens:
                    start = max(start, allowed_at(row.tokens_due or 0.0, now, tokens, m.tokens))
            for m in meters:
                row, values = rows[m.name], {}
                if m.requests:
                    values["requests_due"] = next_due(row.requests_due or 0.0, start, 1, m.requests)
                if m.tokens:
                    values["tokens_due"] = next_due(row.tokens_due or 0.0, start, tokens, m.tokens)
                if values:
                    c.execute(update(limits).where(limits.c.name == m.name).values(**values))
                if m.slots:
                    c.execute(slots.insert().values(name=m.name, holder=holder, expires_at=now + self.lease))
            return Taken(True, start - now)

    def _renew(self, meters: Sequence[Meter], holder: str) -> None:
        with self._begin() as c:
            now = self._now(c)
            for m in meters:
                if m.slots:
                    statement = update(slots).where(slots.c.name == m.name, slots.c.holder == holder)
                    c.execute(statement.values(expires_at=now + self.lease))

    def _finish(self, meters: Sequence[Meter], holder: str, tokens: int) -> None:
        with self._begin() as c:
            for m in meters:
                if m.slots:
                    c.execute(delete(slots).where(slots.c.name == m.name, slots.c.holder == holder))
                if m.tokens and tokens:
                    # Relative, so no lock is needed: the pace moves by what the estimate missed.
                    change = limits.c.tokens_due + tokens * m.tokens.period
                    c.execute(update(limits).where(limits.c.name == m.name).values(tokens_due=change))

    def _block(self, meters: Sequence[Meter], seconds: float) -> None:
        with self._begin() as c:
            rows, now = self._locked(c, meters)
            for m in meters:
                row = rows[m.name]
                till = max(row.blocked_until or 0.0, now + seconds)
                values: dict[str, float] = {"blocked_until": till}
                if m.requests:
                    values["requests_due"] = due_after_block(row.requests_due or 0.0, till, m.requests)
                if m.tokens:
                    values["tokens_due"] = due_after_block(row.tokens_due or 0.0, till, m.tokens)
                c.execute(update(limits).where(limits.c.name == m.name).values(**values))

    def _now(self, c: Connection) -> float:
        if self._postgres:
            return float(c.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()
