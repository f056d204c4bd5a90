"""What the parts of the store share: one engine, the lease length, and this thread's kept connections."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from baton._urls import mask_url

__all__ = ["StoreContext", "utcnow"]


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo: the store keeps naive UTC on every backend."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class StoreContext:
    """The engine the parts of a store share, how long a lease lasts, and its per-thread connections."""

    engine: Engine
    lease: timedelta
    # RunStore._kept: this thread's connection-holding object in a slot, made anew when missing or broken.
    kept: Callable[[str, Callable[[], Any]], Any]

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    def describe(self) -> str:
        """The store's URL without its secrets (a password in its user part or its query), for messages."""
        return mask_url(self.engine.url.render_as_string(hide_password=False))

    def insert(self, table: Table) -> Any:
        """An INSERT of the dialect's own construct, which spells ON CONFLICT."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    @contextlib.contextmanager
    def begin(self, conn: Connection | None = None) -> Iterator[Connection]:
        """`conn` when the caller holds a transaction (it commits), else a transaction of its own."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as c:
            yield c

    @contextlib.contextmanager
    def read(self, conn: Connection | None = None) -> Iterator[Connection]:
        """`conn` when the caller holds one (reads see its uncommitted writes), else a connection to read on."""
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as c:
            yield c
