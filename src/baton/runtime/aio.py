"""Where baton's work runs in a process: one event loop for background runs, and the thread pools that keep
sync work off it.

- `background()` is the process's event loop, on a daemon thread of its own, started when first needed. Runs
  started in the background (`submit`, `resume`, events) execute on it; so do async steps called from sync
  code, which is how they are awaited on a loop instead of an `asyncio.run` per call.
- `work_threads()` runs sync steps (and sync tools) for code on a loop; it has as many threads as
  `BATON_MAX_IN_FLIGHT` allows runs in flight, so it never grows past that.
- `store_threads(store)` runs store calls for code on a loop, so that a slow database never stalls every run
  on it: one thread for SQLite (it has one writer anyway), a few for PostgreSQL.

A forked child (a prefork Celery worker) starts with none of these and makes its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from baton.settings import current_settings

if TYPE_CHECKING:
    from baton.store import RunStore

__all__ = [
    "background", "call_in_background", "call_threads", "in_store_thread", "in_work_thread", "refuse_on_own_loop",
    "store_threads", "submit_off_loop", "work_threads",
]  # fmt: skip

T = TypeVar("T")

# PostgreSQL store calls from a loop at once, at most: the engine's pool holds this many and a few more.
_PG_STORE_THREADS = 8


class _Background:
    """The process's background event loop, on a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._serve, args=(loop, ready), name="baton-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def here(self) -> bool:
        """Whether the calling thread is the loop's own."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; its result arrives in the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop())

    def _reset(self) -> None:
        # After a fork the loop's thread is gone from the child: a new one is made when first needed.
        self._lock = threading.Lock()
        self._loop = self._thread = None


_background = _Background()


def background() -> _Background:
    """The process's background event loop."""
    return _background


def refuse_on_own_loop(what: str, instead: str) -> None:
    """Raise a clear error when sync code that waits (`what`) is called from baton's own loop, an async
    step's home: it would stop every run on the loop until it returned."""
    if _background.here():
        from baton.errors import UserError

        raise UserError(f"{what} waits, and was called from an async step on baton's loop: use {instead}")


def call_in_background(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the background loop and block this thread until it ends (for sync callers).

    Called from the loop's own thread it would wait for itself forever: that is refused.
    """
    if _background.here():
        coro.close()
        from baton.errors import UserError

        raise UserError("sync code called an async step (or agent) from an async step on baton's loop: await it")
    future = _background.submit(coro)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # Ctrl-C while waiting: the work on the loop is cancelled, not left running
        raise


class _Pools:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.work: ThreadPoolExecutor | None = None
        self.calls: ThreadPoolExecutor | None = None
        self.generation = 0


_pools = _Pools()


def work_threads() -> ThreadPoolExecutor:
    """The threads sync steps run on for code on a loop: as many as runs may be in flight."""
    pool = _pools.work
    if pool is None:
        with _pools.lock:
            if _pools.work is None:
                size = current_settings().max_in_flight
                _pools.work = ThreadPoolExecutor(max_workers=size, thread_name_prefix="baton-work")
            pool = _pools.work
    return pool


def call_threads() -> ThreadPoolExecutor:
    """The threads an agent's sync tools and sync providers run on: a pool apart from the steps', so that
    sync steps filling theirs, each waiting for its agent, never wait for their own agents' threads."""
    pool = _pools.calls
    if pool is None:
        with _pools.lock:
            if _pools.calls is None:
                size = current_settings().max_in_flight
                _pools.calls = ThreadPoolExecutor(max_workers=size, thread_name_prefix="baton-call")
            pool = _pools.calls
    return pool


def store_threads(store: RunStore) -> ThreadPoolExecutor:
    """The threads that make `store`'s calls for code on a loop (they end when the store closes)."""
    kept = getattr(store, "_threads", None)
    # Kept on the store, with the fork generation: a child's inherited pool has no threads behind it.
    if kept is None or kept[0] != _pools.generation:
        with _pools.lock:
            kept = getattr(store, "_threads", None)
            if kept is None or kept[0] != _pools.generation:
                size = 1 if store.engine.dialect.name == "sqlite" else _PG_STORE_THREADS
                kept = (_pools.generation, ThreadPoolExecutor(max_workers=size, thread_name_prefix="baton-store"))
                store._threads = kept  # type: ignore[attr-defined]
    return kept[1]


async def in_work_thread(fn: Callable[..., T], *args: Any, pool: ThreadPoolExecutor | None = None) -> T:
    """Call the sync `fn(*args)` on a work thread (or one of `pool`), in this task's context (the step being
    executed)."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(pool or work_threads(), functools.partial(ctx.run, fn, *args))


async def in_store_thread(store: RunStore, fn: Callable[..., T], *args: Any) -> T:
    """Call `fn(*args)`, a call of `store`, on one of its threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(store_threads(store), functools.partial(fn, *args))


async def submit_off_loop(runtime: Any, store: RunStore, pattern: Any, value: Any, **where: Any) -> str | None:
    """A runtime's `asubmit`: its `submit` (recording the run, queueing it) on the store's threads."""
    return await in_store_thread(store, functools.partial(runtime.submit, store, pattern, value, **where))


def _after_fork() -> None:
    _background._reset()
    global _pools
    generation = _pools.generation + 1
    _pools = _Pools()
    _pools.generation = generation


os.register_at_fork(after_in_child=_after_fork)
