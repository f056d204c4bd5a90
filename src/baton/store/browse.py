"""Finding runs: the listing behind `baton runs`, the API and the dashboard, with its filters and counts.

Run ids begin with their creation time in milliseconds, so id order is creation order: newest first is a
walk down the primary key (or down an index ending in the id), a page boundary is an id (the keyset cursor),
and a time window is an id range. Nothing here sorts or offsets, so a page costs the same on the first page
as on the thousandth, whatever the store holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from baton.errors import UserError
from baton.status import RunStatus
from baton.store.context import StoreContext
from baton.store.schema import runs

__all__ = ["Browse", "RunFilter", "RunRef", "id_at"]


def id_at(when: datetime) -> str:
    """The smallest run id created at `when` (naive UTC, or aware): ids at or after it sort at or above it."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    ms = int(when.replace(tzinfo=UTC).timestamp() * 1000)
    return f"{max(ms, 0):012x}" + "0" * 20


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a listing shows: every field given narrows it; `since`/`until` bound the creation time."""

    status: str | None = None
    pipeline: str | None = None
    failed_step: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    correlation_id: str | None = None

    def conditions(self, *, with_status: bool = True) -> list[ColumnElement[bool]]:
        """The WHERE clauses of this filter (without the status one, for counts per status)."""
        cond: list[ColumnElement[bool]] = []
        if with_status and self.status:
            cond.append(runs.c.status == self.status)
            if self.status != RunStatus.SUCCEEDED.value:
                # Implied, but SQLite's planner needs it said to use the partial index on the rare statuses.
                cond.append(runs.c.status != RunStatus.SUCCEEDED.value)
        if self.pipeline:
            cond.append(runs.c.pipeline == self.pipeline)
        if self.failed_step:
            cond.append(runs.c.failed_step == self.failed_step)
        if self.since is not None:
            cond.append(runs.c.id >= _bound(self.since, "since"))
        if self.until is not None:
            cond.append(runs.c.id < _bound(self.until, "until"))
        if self.correlation_id is not None:
            cond.append(runs.c.correlation_id == self.correlation_id)
        return cond


def _bound(when: datetime, field: str) -> str:
    try:
        return id_at(when)
    except (OverflowError, ValueError, OSError):
        raise UserError(f"{field}: {when.isoformat()} is out of range in UTC") from None


@dataclass(frozen=True, slots=True)
class RunRef:
    """A run as an action on many runs sees it: what finds its pattern, where it runs, when it last changed."""

    id: str
    pipeline: str
    target: str | None
    status: RunStatus
    runtime: str
    updated_at: datetime


class Browse:
    """Counting and faceting runs, for the dashboard's filters, and walking them, for actions on many."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    def count(self, where: RunFilter) -> dict[str, int]:
        """How many runs the filter matches per status (its own status filter left out), every status listed.

        The statuses other than succeeded are counted on their partial index and succeeded is what remains
        of the total, which the smallest index covering the filter answers: no pass over the table's rows.
        """
        cond = where.conditions(with_status=False)
        counts = dict.fromkeys((s.value for s in RunStatus), 0)
        with self._ctx.engine.connect() as c:
            rare = c.execute(
                select(runs.c.status, func.count())
                .where(runs.c.status != RunStatus.SUCCEEDED.value, *cond)
                .group_by(runs.c.status)
            ).all()
            total = c.execute(select(func.count()).select_from(runs).where(*cond)).scalar_one()
        for status, n in rare:
            counts[status] = n
        counts[RunStatus.SUCCEEDED.value] = total - sum(n for _, n in rare)
        return counts

    def each(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        changed_before: datetime | None = None,
        page: int = 500,
    ) -> Iterator[RunRef]:
        """Every run with `status` (of `pipeline`, last changed before `changed_before`), oldest first.

        Read `page` runs at a time on a keyset (the id), with no connection held between pages: a walk over
        100,000 runs holds 500 in memory, and runs the caller changes as it goes are not met twice.
        """
        cond = RunFilter(status=status, pipeline=pipeline).conditions()
        if changed_before is not None:
            cond.append(runs.c.updated_at < changed_before)
        columns = (runs.c.id, runs.c.pipeline, runs.c.target, runs.c.status, runs.c.runtime, runs.c.updated_at)
        after = ""
        while True:
            query = select(*columns).where(*cond, runs.c.id > after).order_by(runs.c.id).limit(page)
            with self._ctx.engine.connect() as c:
                rows = c.execute(query).all()
            for rid, name, target, found, runtime, updated in rows:
                yield RunRef(rid, name, target, RunStatus(found), runtime, updated)
            if len(rows) < page:
                return
            after = rows[-1][0]

    def facets(self) -> tuple[list[str], list[str]]:
        """The pipelines that have runs, and the steps runs failed at: the choices of the dashboard's filters."""
        with self._ctx.engine.connect() as c:
            pipelines = _distinct(c, runs.c.pipeline, self._ctx.dialect)
            failed = (
                c.execute(
                    select(runs.c.failed_step)
                    .where(runs.c.failed_step.is_not(None))
                    .group_by(runs.c.failed_step)
                    .order_by(runs.c.failed_step)
                )
                .scalars()
                .all()
            )
        return pipelines, list(failed)


def _distinct(c: Any, column: Any, dialect: str) -> list[str]:
    """The distinct values of an indexed column, in order."""
    if dialect == "postgresql":
        # A loose index scan: one index probe per distinct value instead of reading every entry, which
        # PostgreSQL does not do by itself (SQLite's planner does, for the plain DISTINCT below).
        sql = f"""
            WITH RECURSIVE t(v) AS (
                (SELECT {column.name} FROM {column.table.name} ORDER BY 1 LIMIT 1)
                UNION ALL
                SELECT (SELECT {column.name} FROM {column.table.name} WHERE {column.name} > t.v ORDER BY 1 LIMIT 1)
                FROM t WHERE t.v IS NOT NULL
            )
            SELECT v FROM t WHERE v IS NOT NULL
        """
        return [r[0] for r in c.exec_driver_sql(sql).all()]
    found: Sequence[str] = c.execute(select(column).distinct().order_by(column)).scalars().all()
    return list(found)
