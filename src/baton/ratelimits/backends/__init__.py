"""Where limits are shared: Redis for the celery runtime (when it has a Redis), the run store otherwise."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from baton.ratelimits.backend import Backend

if TYPE_CHECKING:
    from baton.settings import Settings, WorkerSettings
    from baton.store import RunStore

__all__ = ["backend_for", "redis_url"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_lock = threading.Lock()
_on_redis: dict[tuple[str, float], Backend] = {}
_on_store: weakref.WeakKeyDictionary[RunStore, Backend] = weakref.WeakKeyDictionary()


def redis_url(worker: WorkerSettings) -> str | None:
    """The Redis of the celery runtime: its broker's when that is Redis, else its result backend's, if any."""
    for url in (worker.broker_url, worker.result_backend):
        if url.startswith(_REDIS_SCHEMES):
            return url
    return None


def backend_for(store: RunStore, settings: Settings, runtime: str) -> Backend:
    """The backend that shares limits among every process of a call on `runtime`: as BATON_LIMITS_BACKEND
    says, by default Redis when the runtime is celery and it has one, else `store`. One per process (made
    again in a forked child)."""
    lease = settings.store.lease_seconds
    shared_by = settings.providers.limits_backend
    url = redis_url(settings.worker) if shared_by == "redis" or (shared_by == "auto" and runtime == "celery") else None
    if shared_by == "redis" and url is None:
        from baton.errors import UserError

        raise UserError("BATON_LIMITS_BACKEND=redis, but neither BATON_BROKER_URL nor BATON_RESULT_BACKEND is a Redis")
    with _lock:
        if url is not None:
            found = _on_redis.get((url, lease))
            if found is None:
                from baton.ratelimits.backends.redis import RedisBackend

                found = _on_redis[url, lease] = RedisBackend(url, lease=lease)
            return found
        found = _on_store.get(store)
        if found is None or found.lease != lease:
            from baton.ratelimits.backends.store import StoreBackend

            found = _on_store[store] = StoreBackend(store, lease=lease)
        return found


def _after_fork() -> None:
    # A client's connections belong to the parent; the lock may have been held by one of its threads.
    global _lock, _on_redis, _on_store
    _lock, _on_redis, _on_store = threading.Lock(), {}, weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_after_fork)
