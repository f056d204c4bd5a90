"""The sweeper: celery runs that nothing moves are queued again, with no person, by every `baton worker`
(and `baton serve` on the celery runtime).

A run is lost when no worker holds a step of it and either

- a step's lease ran out: its worker stopped renewing it (killed, its machine gone). Found within a sweep
  of the lease's end, so such a run moves again within `BATON_LEASE_SECONDS` plus a few seconds;
- or the broker lost its data (Redis restarted without persistence: the key baton keeps in it is gone) and
  nothing happened to the run since: its message went with the data. Found at the next sweep;
- or nothing happened to it for `BATON_REQUEUE_AFTER` seconds (pending, or between two steps, or past a
  retry's countdown) while the broker's queue is empty: its message was lost some other way. With messages
  waiting in the queue, the run may be behind them: it waits, as they do, until the queue empties.

Queuing again moves the run's fence on (`Runs.refence`): a copy of the old message that turns up later does
nothing. Several sweepers may find the same run; one moves the fence, the others find it moved.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from baton.patterns.registry import find_pattern
from baton.runtime.celery._app import QUEUE
from baton.runtime.celery._tasks import is_trouble
from baton.settings import Settings
from baton.store import RunStore, utcnow
from baton.store.trouble import calm_for

__all__ = ["Sweeper", "queued", "sweep_seconds"]

log = logging.getLogger("baton.celery")

# The key baton keeps in the broker's Redis: gone, it says that Redis lost its data (and every message).
EPOCH_KEY = "baton:epoch"


def sweep_seconds(settings: Settings) -> float:
    """How often a sweeper looks: often enough that a lease's end is found within a few seconds."""
    return max(0.5, min(5.0, settings.store.lease_seconds / 4, settings.worker.requeue_after / 3))


def queued(app: Any) -> int | None:
    """Messages waiting in baton's queue on `app`'s broker (None: it cannot say right now)."""
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            try:
                return int(conn.default_channel.queue_declare(queue=QUEUE, passive=True).message_count)
            except Exception as exc:
                # Redis drops an empty list, and kombu then says the queue does not exist.
                if "not_found" in str(exc).lower() or "no queue" in str(exc).lower():
                    return 0
                raise
    except Exception:
        log.debug("could not count the messages in the queue", exc_info=True)
        return None


class Sweeper:
    """Finds lost celery runs in the store and queues them again through `app`."""

    def __init__(self, app: Any, store: RunStore, settings: Settings) -> None:
        self.app, self.store, self.settings = app, store, settings
        self._unqueued: set[str] = set()
        self._seen_epoch = False

    def sweep(self, now: datetime | None = None) -> list[str]:
        """Queue the lost runs again; returns their ids."""
        from baton.runtime.celery._client import CeleryRuntime  # the client sends through the tasks

        store = self.store
        # Right after this process met the store's trouble, leases may have run out only because their
        # holders could not renew them either: give the heartbeats one lease to catch up.
        if calm_for(str(store.engine.url)) < store.lease.total_seconds():
            return []
        now = now or utcnow()
        reset_at = self._broker_reset(now)
        quiet = timedelta(seconds=self.settings.worker.requeue_after) if self.queued() == 0 else None
        runtime = CeleryRuntime(self.settings)
        requeued = []
        for lost in store.runs.lost(now, quiet=quiet, reset_at=reset_at):
            try:
                pattern = find_pattern(lost.pipeline, lost.target)
                moved = runtime.requeue(store, pattern, lost.id, lost.claims)
            except Exception as exc:
                if is_trouble(exc):
                    raise  # the next sweep tries again
                # Its pattern does not import here, or no longer matches the run: nothing moved, and the run
                # shows stalled on the dashboard. Said once per run, not every sweep.
                if lost.id not in self._unqueued:
                    self._unqueued.add(lost.id)
                    log.warning("run %s looks lost, but cannot be queued again from here: %s", lost.id, exc)
                continue
            if moved:
                why = {"lease": "a step's lease ran out"}.get(lost.why, "its message was lost")
                log.warning("run %s: %s; queued again", lost.id, why)
                requeued.append(lost.id)
        return requeued

    def _broker_reset(self, now: datetime) -> datetime | None:
        """When the broker (Redis) lost its data since the last sweep: now, else None.

        baton keeps a key in Redis; a sweeper that saw it before and finds it gone knows that every message
        sent before went with it. One sweeper finds out (it puts the key back); that is enough.
        """
        try:
            with self.app.connection_for_write() as conn:
                if conn.transport.driver_type != "redis":
                    return None  # RabbitMQ keeps durable queues' persistent messages through a restart
                fresh = conn.default_channel.client.set(EPOCH_KEY, now.isoformat(), nx=True)
        except Exception:
            log.debug("could not look at the broker's epoch key", exc_info=True)
            return None
        seen, self._seen_epoch = self._seen_epoch, True
        return now if fresh and seen else None

    def queued(self) -> int | None:
        """Messages waiting in baton's queue (None: the broker cannot say right now)."""
        return queued(self.app)

    def forever(self, stop: threading.Event | None = None, *, also: Any = None, also_every: float = 15.0) -> None:
        """Sweep every few seconds until `stop` is set; `also()` (the outbox's sweep) every `also_every`."""
        interval = sweep_seconds(self.settings)
        stop = stop or threading.Event()
        since_also = 0.0
        while not stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # the store or the broker in trouble: the next sweep tries again
                log.warning("could not sweep for lost runs", exc_info=True)
            since_also += interval
            if also is not None and since_also >= also_every:
                since_also = 0.0
                try:
                    also()
                except Exception:
                    log.warning("could not sweep the event outbox", exc_info=True)
