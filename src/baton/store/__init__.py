"""The run store: where runs, steps, checkpoints and errors are kept (SQLite or PostgreSQL)."""

from __future__ import annotations

import threading

from baton.settings import Settings, current_settings
from baton.store.leases import StepClaim, StepState
from baton.store.runs import CELERY_OWNER
from baton.store.store import RunStore, StepResult, utcnow
from baton.store.writer import LostOwnership, RunWriter

__all__ = [
    "CELERY_OWNER",
    "LostOwnership",
    "RunStore",
    "RunWriter",
    "StepClaim",
    "StepResult",
    "StepState",
    "open_store",
    "utcnow",
]

_stores: dict[str, RunStore] = {}
_lock = threading.Lock()


def open_store(url: str | None = None, *, settings: Settings | None = None) -> RunStore:
    """The store at `url`, else `settings`' (default: this process's settings), shared per process."""
    chosen = (settings or current_settings()).store
    url = url or chosen.resolved_url()
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = RunStore(url, lease_seconds=chosen.lease_seconds)
        return store
