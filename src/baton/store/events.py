"""Events in the store: the outbox, deliveries to subscribers, and what `baton events` shows.

An event is written in the transaction of the checkpoint of the step that emitted it (see `RunWriter`), or
on its own by `publish`. Until it is handed to its subscribers it has no `dispatched_at`: a dispatcher that
crashed leaves it there, and the next dispatch hands it over again. A dispatch that fails counts a try on
the event (`tries`, `last_error`) and puts the next one off (`retry_at`); `dead_letter` gives up on it.
Each (event, subscriber) pair has one delivery row, created in the same transaction as the run that handles
it, so a subscriber handles an event once however often the event is dispatched; the delivery's status is
its run's.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from baton._ids import check_prefix, is_prefix
from baton._text import storable
from baton.status import RunStatus
from baton.store.context import StoreContext
from baton.store.schema import deliveries, events, runs, subscriptions

__all__ = ["Delivery", "EventRecord", "Events"]

# A delivery whose run ended in one of these is dead-lettered: its subscriber did not handle the event.
DEAD = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)
# How much of a failed dispatch's error is kept (a traceback's last line is enough to tell why).
_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event handed to one subscriber: the run that handles it, and how that went."""

    subscriber: str
    run_id: str | None
    status: str  # the run's status; "undeliverable" when no run could start (see `error`)
    deliveries: int
    error: str | None = None

    @property
    def dead(self) -> bool:
        """True when the subscriber did not handle the event (its run failed, or none could start)."""
        return self.status in {s.value for s in DEAD} or self.status == "undeliverable"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event as recorded, with its deliveries."""

    id: str
    type: str
    payload: dict[str, Any]
    correlation_id: str
    source_run: str | None
    source_step: int | None
    created_at: datetime
    dispatched_at: datetime | None
    runtime: str = "local"
    deliveries: tuple[Delivery, ...] = field(default=())
    tries: int = 0  # dispatches that failed so far
    last_error: str | None = None  # the last one's error

    def to_json_dict(self) -> dict[str, Any]:
        """The `baton events --json` shape."""
        return {
            "id": self.id,
            "type": self.type,
            "payload": self.payload,
            "correlation_id": self.correlation_id,
            "source_run": self.source_run,
            "created_at": self.created_at.isoformat(),
            "dispatched": self.dispatched_at is not None,
            "deliveries": [
                {"subscriber": d.subscriber, "run_id": d.run_id, "status": d.status, "deliveries": d.deliveries}
                | ({"error": d.error} if d.error else {})
                for d in self.deliveries
            ],
        } | ({"tries": self.tries, "last_error": self.last_error} if self.tries else {})


class Events:
    """Events: the outbox, subscriptions, deliveries, and listing them."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    def add(
        self,
        event_id: str,
        event_type: str,
        payload_json: str,
        correlation_id: str,
        now: datetime,
        *,
        runtime: str = "local",
        conn: Connection | None = None,
    ) -> None:
        """Record an event published from outside any run (an HTTP request, a script), for `runtime`."""
        with self._ctx.begin(conn) as c:
            row = {"id": event_id, "type": event_type, "payload": json.loads(payload_json), "runtime": runtime}
            c.execute(insert(events).values(**row, correlation_id=correlation_id, created_at=now))

    def record_subscriptions(self, found: Sequence[tuple[str, str, str | None]], now: datetime) -> None:
        """Declare subscriptions (event type, subscriber, target to import it from) known to this process."""
        if not found:
            return
        with self._ctx.engine.begin() as c:
            for event_type, subscriber, target in found:
                statement = self._ctx.insert(subscriptions).values(
                    event_type=event_type, subscriber=subscriber, target=target, updated_at=now
                )
                c.execute(
                    statement.on_conflict_do_update(
                        index_elements=[subscriptions.c.event_type, subscriptions.c.subscriber],
                        set_={"target": statement.excluded.target, "updated_at": now},
                    )
                )

    def subscriptions_of(self, event_type: str) -> dict[str, str | None]:
        """The recorded subscribers of `event_type`, with the targets to import them from."""
        query = select(subscriptions.c.subscriber, subscriptions.c.target).where(
            subscriptions.c.event_type == event_type
        )
        with self._ctx.engine.connect() as c:
            return {name: target for name, target in c.execute(query).all()}

    def delivery_run(self, event_id: str, subscriber: str) -> tuple[str | None, RunStatus | None, datetime | None]:
        """The run handling an event for a subscriber, its status and when it was created (all None: no
        delivery yet)."""
        with self._ctx.engine.connect() as c:
            row = c.execute(
                select(deliveries.c.run_id, runs.c.status, runs.c.created_at)
                .select_from(deliveries.outerjoin(runs, runs.c.id == deliveries.c.run_id))
                .where(deliveries.c.event_id == event_id, deliveries.c.subscriber == subscriber)
            ).first()
        if row is None:
            return None, None, None
        return row[0], RunStatus(row[1]) if row[1] else None, row[2]

    def outbox(
        self,
        *,
        older_than: datetime | None = None,
        after: str | None = None,
        runtime: str | None = None,
        ids: Sequence[str] | None = None,
        due: datetime | None = None,
        limit: int = 100,
    ) -> builtins.list[EventRecord]:
        """Events not yet handed to their subscribers, oldest first (ids are time-ordered): only those
        written before `older_than`, after the event `after` (a keyset cursor), for `runtime`, and (with
        `due`) not put off past then by a failed try."""
        query = select(events).where(events.c.dispatched_at.is_(None)).order_by(events.c.id).limit(limit)
        if due is not None:
            query = query.where(or_(events.c.retry_at.is_(None), events.c.retry_at <= due))
        if runtime is not None:
            query = query.where(events.c.runtime == runtime)
        if ids is not None:
            query = query.where(events.c.id.in_(list(ids)))
        if older_than is not None:
            query = query.where(events.c.created_at < older_than)
        if after is not None:
            query = query.where(events.c.id > after)
        with self._ctx.engine.connect() as c:
            return [_event(row) for row in c.execute(query).mappings()]

    def mark_dispatched(self, event_id: str, now: datetime, *, conn: Connection | None = None) -> None:
        """The event has been handed to every subscriber (each has its delivery row)."""
        with self._ctx.begin(conn) as c:
            c.execute(update(events).where(events.c.id == event_id).values(dispatched_at=now))

    def failed_try(self, event_id: str, error: str, now: datetime, retry_at: datetime) -> int:
        """Count a dispatch of the event that failed with `error`, not to be tried again before `retry_at`;
        returns its tries so far (0 when it was handed over meanwhile, by another process)."""
        statement = (
            update(events)
            .where(events.c.id == event_id, events.c.dispatched_at.is_(None))
            .values(tries=events.c.tries + 1, last_error=storable(error[:_ERROR_CHARS]), retry_at=retry_at)
            .returning(events.c.tries)
        )
        with self._ctx.engine.begin() as c:
            return int(c.execute(statement).scalar() or 0)

    def dead_letter(self, event_id: str, subscribers: Sequence[str], error: str, now: datetime) -> None:
        """Give up on handing the event over: each of `subscribers` without a run gets a dead letter saying
        `error`, and the event leaves the outbox, in one transaction."""
        with self._ctx.engine.begin() as c:
            for subscriber in subscribers:
                self.undeliverable(event_id, subscriber, error, now, conn=c)
            self.mark_dispatched(event_id, now, conn=c)

    def undeliverable(
        self, event_id: str, subscriber: str, error: str, now: datetime, *, conn: Connection | None = None
    ) -> None:
        """Record that the event could not be handed to `subscriber` at all, and why (a dead letter).

        A delivery that already has a run keeps it: another process handed the event over meanwhile.
        """
        error = storable(error) or ""
        key = {"event_id": event_id, "subscriber": subscriber}
        statement = self._ctx.insert(deliveries).values(
            **key, deliveries=0, error=error, created_at=now, updated_at=now
        )
        with self._ctx.begin(conn) as c:
            c.execute(
                statement.on_conflict_do_update(
                    index_elements=[deliveries.c.event_id, deliveries.c.subscriber],
                    set_={"error": error, "updated_at": now},
                    where=deliveries.c.run_id.is_(None),
                )
            )

    def get(self, event_id: str) -> EventRecord | None:
        """One event with its deliveries; a unique prefix of its id will do (a too short one is refused)."""
        with self._ctx.engine.connect() as c:
            row = c.execute(select(events).where(events.c.id == event_id)).mappings().first()
            if row is None:
                check_prefix(event_id, "event")
            if row is None and is_prefix(event_id):
                found = c.execute(select(events).where(events.c.id.startswith(event_id)).limit(2)).mappings().all()
                row = found[0] if len(found) == 1 else None
            if row is None:
                return None
        return self._with_deliveries([_event(row)])[0]

    def list(
        self,
        *,
        correlation_id: str | None = None,
        source_run: str | None = None,
        ids: Sequence[str] | None = None,
        dead: bool = False,
        limit: int = 50,
    ) -> builtins.list[EventRecord]:
        """Events newest first (ids are time-ordered), with their deliveries; `dead`: only those with a
        dead-lettered delivery."""
        query = select(events).order_by(events.c.id.desc())
        if correlation_id is not None:
            query = query.where(events.c.correlation_id == correlation_id)
        if source_run is not None:
            query = query.where(events.c.source_run == source_run)
        if ids is not None:
            query = query.where(events.c.id.in_(list(ids)))
        if dead:
            dead_runs = select(runs.c.id).where(runs.c.status.in_(list(DEAD)))
            never_started = and_(deliveries.c.run_id.is_(None), deliveries.c.error.is_not(None))
            dead_ones = select(deliveries.c.event_id).where(or_(deliveries.c.run_id.in_(dead_runs), never_started))
            query = query.where(events.c.id.in_(dead_ones))
        with self._ctx.engine.connect() as c:
            found = [_event(row) for row in c.execute(query.limit(limit)).mappings()]
        return self._with_deliveries(found)

    def chain_busy(self, correlation_id: str) -> bool:
        """True while a run of the chain is pending or running, or one of its events waits in the outbox."""
        live = [RunStatus.PENDING, RunStatus.RUNNING]
        with self._ctx.engine.connect() as c:
            running = c.execute(
                select(runs.c.id).where(runs.c.correlation_id == correlation_id, runs.c.status.in_(live)).limit(1)
            ).first()
            waiting = c.execute(
                select(events.c.id)
                .where(events.c.correlation_id == correlation_id, events.c.dispatched_at.is_(None))
                .limit(1)
            ).first()
        return running is not None or waiting is not None

    def _with_deliveries(self, found: builtins.list[EventRecord]) -> builtins.list[EventRecord]:
        if not found:
            return found
        query = (
            select(deliveries, runs.c.status)
            .select_from(deliveries.outerjoin(runs, runs.c.id == deliveries.c.run_id))
            .where(deliveries.c.event_id.in_([e.id for e in found]))
            .order_by(deliveries.c.created_at, deliveries.c.subscriber)
        )
        by_event: dict[str, list[Delivery]] = {}
        with self._ctx.engine.connect() as c:
            for row in c.execute(query).mappings():
                status = row["status"] or ("undeliverable" if row["error"] else "starting")
                by_event.setdefault(row["event_id"], []).append(
                    Delivery(row["subscriber"], row["run_id"], status, row["deliveries"], row["error"])
                )
        return [
            EventRecord(**{**_fields(e), "deliveries": tuple(by_event.get(e.id, ()))})  # type: ignore[arg-type]
            for e in found
        ]


def _fields(e: EventRecord) -> dict[str, Any]:
    return {name: getattr(e, name) for name in EventRecord.__slots__}


def _event(row: Any) -> EventRecord:
    payload = row["payload"]
    return EventRecord(
        id=row["id"],
        type=row["type"],
        payload=json.loads(payload) if isinstance(payload, str) else payload,
        correlation_id=row["correlation_id"],
        source_run=row["source_run"],
        source_step=row["source_step"],
        created_at=row["created_at"],
        dispatched_at=row["dispatched_at"],
        runtime=row["runtime"],
        tries=row["tries"],
        last_error=row["last_error"],
    )
