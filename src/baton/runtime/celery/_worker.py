"""A worker process's lifecycle: its store, the heartbeat of the step leases it holds, the sweeper (lost runs,
the outbox), and what a prefork child must not inherit from its parent."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import signals

from baton._owner import this_owner
from baton.runtime.base import hooks
from baton.settings import Settings
from baton.store import RunStore, open_store, utcnow

__all__ = ["holding", "worker_store"]

log = logging.getLogger("baton.celery")

# How often, and after how long, a worker hands over events that their emitting process left in the outbox.
SWEEP_SECONDS = 15.0


class _LeaseBeat:
    """Renews the leases of the steps this worker process is executing, and only those."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[tuple[str, int], int] = {}
        self.thread: threading.Thread | None = None

    def enter(self, store: RunStore, me: str, step: tuple[str, int]) -> None:
        with self.lock:
            self.held[step] = self.held.get(step, 0) + 1
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, args=(store, me), name="baton-lease", daemon=True)
                self.thread.start()

    def leave(self, step: tuple[str, int]) -> None:
        with self.lock:
            self.held[step] -= 1
            if not self.held[step]:
                del self.held[step]

    def _loop(self, store: RunStore, me: str) -> None:
        interval = max(0.5, store.lease.total_seconds() / 3)
        while True:
            time.sleep(interval)
            with self.lock:
                held = list(self.held)
            try:
                store.steps.heartbeat(me, held, utcnow())
            except Exception:  # a database hiccup must not end the heartbeat; the next beat tries again
                log.warning("could not renew the step leases of %s", me, exc_info=True)


_beat = _LeaseBeat()
_stores: dict[str, RunStore] = {}


def worker_store(settings: Settings) -> RunStore:
    """The store of this worker process for `settings` (opened after the fork, see `_after_fork`)."""
    url = settings.store.resolved_url()
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = open_store(settings=settings)
    return store


@contextlib.contextmanager
def holding(store: RunStore, run_id: str, idx: int) -> Iterator[None]:
    """While the block runs, this process's heartbeat renews its lease on the step."""
    _beat.enter(store, this_owner(), (run_id, idx))
    try:
        yield
    finally:
        _beat.leave((run_id, idx))


def _sweep(app: Any) -> None:
    from baton.runtime.celery._sweep import Sweeper

    settings: Settings = app.baton_settings
    store = worker_store(settings)
    Sweeper(app, store, settings).forever(
        also=lambda: hooks.swept(store, "celery", SWEEP_SECONDS), also_every=SWEEP_SECONDS
    )


@signals.worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """The worker's main process sweeps: lost runs are queued again, and events whose dispatch a crash
    interrupted go out."""
    app = getattr(sender, "app", None)
    if getattr(app, "baton_settings", None) is None:
        return  # a worker of another app in this process
    threading.Thread(target=_sweep, args=(app,), name="baton-sweeper", daemon=True).start()


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A prefork child must not share the parent's database connections: it opens its own."""
    import baton.store as store_module

    for store in list(store_module._stores.values()):
        store.engine.dispose(close=False)
    store_module._stores.clear()
    global _beat
    _beat = _LeaseBeat()
    _stores.clear()
