"""What every runtime is: the `Runtime` protocol, the hooks around an attempt, and the runs this process holds.

A runtime interprets a pattern's plan (`baton.patterns.plan`) somewhere: in this process (`local`) or on
workers (`celery`). Every call that starts work returns the run id at once; waiting is `baton.wait`, which
watches the store. Modules above the runtimes (events, tracing, the CLI) plug in through `hooks`, never by
being imported from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from baton._ids import RUN_ID_LENGTH

if TYPE_CHECKING:
    from baton.budgets import Budget
    from baton.run import Run
    from baton.runtime.executor import Attempt, Outcome
    from baton.store import RunStore

__all__ = ["Hooks", "Observer", "Runtime", "await_for", "hooks", "running_here", "wait_for"]

log = logging.getLogger("baton.runtime")


class Observer(Protocol):
    """Told what a run does as it does it (the CLI's live progress display is one)."""

    def run_created(self, run_id: str) -> None:
        """The run has its id and is about to execute."""

    def step_started(self, run_id: str, idx: int, name: str, attempt: int) -> None:
        """A step's attempt starts."""

    def step_finished(self, run_id: str, idx: int, name: str, outcome: Outcome, duration_s: float) -> None:
        """A step's attempt ended with `outcome`."""


@runtime_checkable
class Runtime(Protocol):
    """Where a pattern's steps execute. Built-ins and plugins register under the `baton.runtimes` entry point."""

    name: str
    # Whether runs execute in the process that starts them, so that it must stay until they end.
    executes_here: bool

    def submit(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        *,
        correlation_id: str | None = None,
        trigger_event: str | None = None,
        delivery: tuple[str, str | None] | None = None,
        budget: Budget | None = None,
    ) -> str | None:
        """Record a pending run of `pattern` on the validated `value` and start it; returns its id at once
        (None when the event `delivery` was already handed to that subscriber). `budget` overrides the
        pattern's (see `baton.runtime.records.create_run`, which records both)."""
        ...

    def run(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        observer: Observer | None = None,
        *,
        budget: Budget | None = None,
    ) -> Run:
        """Record a run, follow it to its end (here, or on workers through the store) and return it."""
        ...

    async def asubmit(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        *,
        correlation_id: str | None = None,
        trigger_event: str | None = None,
        delivery: tuple[str, str | None] | None = None,
        budget: Budget | None = None,
    ) -> str | None:
        """`submit` for async code: it never blocks the caller's loop."""
        ...

    async def arun(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        observer: Observer | None = None,
        *,
        budget: Budget | None = None,
    ) -> Run:
        """`run` for async code: it never blocks the caller's loop."""
        ...

    def resume(self, store: RunStore, pattern: Any, run_id: str, observer: Observer | None = None) -> str:
        """Continue a failed or interrupted run at what its pattern says is unfinished; returns at once."""
        ...

    def retry_from(
        self, store: RunStore, pattern: Any, run_id: str, step: str, observer: Observer | None = None
    ) -> str:
        """Discard the checkpoints of `step` and of what its pattern re-runs after it, and run them again."""
        ...

    def approve(self, store: RunStore, pattern: Any, run_id: str) -> str:
        """Continue a run awaiting approval at the step it waited before; returns at once."""
        ...


class Hooks:
    """Listeners the execution core calls, whatever the runtime: where events, and later tracing,
    budgets and limits, plug in without the runtimes importing them."""

    def __init__(self) -> None:
        self._emitted: list[Callable[[RunStore, str, Sequence[str]], None]] = []
        self._sweeps: list[Callable[[RunStore, str, float], None]] = []
        self._around: list[Callable[[Attempt], Any]] = []

    def on_emitted(self, listener: Callable[[RunStore, str, Sequence[str]], None]) -> None:
        """Call `listener(store, runtime, event_ids)` after a checkpoint wrote events to the outbox."""
        if listener not in self._emitted:
            self._emitted.append(listener)

    def on_sweep(self, listener: Callable[[RunStore, str, float], None]) -> None:
        """Call `listener(store, runtime, older_than_s)` on a worker's periodic sweep (the outbox's)."""
        if listener not in self._sweeps:
            self._sweeps.append(listener)

    def swept(self, store: RunStore, runtime: str, older_than_s: float) -> None:
        """A periodic sweep: hand over what others left behind for longer than `older_than_s`."""
        for listener in self._sweeps:
            listener(store, runtime, older_than_s)

    def around_attempt(self, wrapper: Callable[[Attempt], Any]) -> None:
        """Enter the context manager `wrapper(attempt)` around every attempt's work (a span, a budget check)."""
        if wrapper not in self._around:
            self._around.append(wrapper)

    def emitted(self, store: RunStore, runtime: str, event_ids: Sequence[str]) -> None:
        """Tell the listeners that `event_ids` wait in the outbox; a listener's failure is logged, not raised
        (the events are stored, and a sweep hands them over)."""
        for listener in self._emitted:
            try:
                listener(store, runtime, event_ids)
            except Exception:
                log.warning("could not hand over events %s", list(event_ids), exc_info=True)

    @property
    def wrapping(self) -> bool:
        """Whether anything wraps an attempt (so that the executor's hot path can skip it)."""
        return bool(self._around)

    def wrappers(self, attempt: Attempt) -> list[Any]:
        """The context managers to enter around `attempt`."""
        return [wrap(attempt) for wrap in self._around]


hooks = Hooks()


class _RunningHere:
    """The runs executing in this process: `baton.wait` is woken when one stops, and a waiter that is
    interrupted (Ctrl-C) gives the run up at once, so its thread stops at its next checkpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[threading.Event, Callable[[BaseException], None]]] = {}
        # Told every run that stops here (the async waiters' watchers), from any thread: its id, and the run as
        # it ended when the runtime has it at hand (else None: read it from the store).
        self.listeners: list[Callable[[str, Run | None], None]] = []

    def started(self, run_id: str, abandon: Callable[[BaseException], None]) -> None:
        """`run_id` executes here from now on; `abandon(exc)` gives it up."""
        with self._lock:
            self._runs[run_id] = (threading.Event(), abandon)

    def stopped(self, run_id: str, run: Run | None = None) -> None:
        """`run_id` no longer executes here (it ended as `run`, if given): wake whoever waits for it."""
        with self._lock:
            found = self._runs.pop(run_id, None)
        if found is not None:
            found[0].set()
        for listener in list(self.listeners):
            listener(run_id, run)

    def here(self, run_id: str) -> bool:
        """Whether `run_id` executes in this process now (its end will be told to the listeners)."""
        return run_id in self._runs

    def pause(self, run_id: str, seconds: float) -> None:
        """Sleep up to `seconds`, less if `run_id` stops here meanwhile."""
        with self._lock:
            found = self._runs.get(run_id)
        if found is None:
            threading.Event().wait(seconds)
        else:
            found[0].wait(seconds)

    def abandon(self, run_id: str, exc: BaseException) -> None:
        """Give up `run_id` if it executes here (its waiter was interrupted)."""
        with self._lock:
            found = self._runs.get(run_id)
        if found is not None:
            found[1](exc)


running_here = _RunningHere()


def _forget_runs_here() -> None:
    # A forked child executes none of its parent's runs, and a lock held at the fork must not bind it.
    running_here._lock = threading.Lock()
    running_here._runs.clear()
    running_here.listeners.clear()


os.register_at_fork(after_in_child=_forget_runs_here)


def wait_for(store: RunStore, run_id: str, *, timeout: float | None = None, poll: float = 0.05) -> Run:
    """Wait until a run stops running and return it (what `baton.wait` does).

    It watches the store, whatever the runtime; a run executing in this process wakes it as soon as it stops.
    Interrupted (Ctrl-C) while such a run executes, it gives the run up: the run is marked interrupted and
    its thread stops at its next checkpoint.
    """
    from baton.errors import RunError
    from baton.runtime.aio import refuse_on_own_loop

    refuse_on_own_loop("baton.wait()", "await baton.await_run()")
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            # A run whose owner died ends interrupted: waiting must not outlive it.
            store.runs.reap(run_id)
            found = store.runs.get(run_id)
            run_id = found.id
            if found.status.finished:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise RunError(f"run {found.id} is still {found.status.value} after {timeout} s")
            running_here.pause(found.id, poll if deadline is None else min(poll, deadline - time.monotonic()))
    except KeyboardInterrupt as exc:
        running_here.abandon(run_id, exc)
        raise


class _Watcher:
    """Watches the runs that async code awaits on one loop and one store, in one read for all of them:
    a thousand waiters cost one query a poll, not a thousand. A run that stops in this process wakes it."""

    def __init__(self, store: RunStore, poll: float) -> None:
        self.store, self.poll = store, poll
        self.waiting: dict[str, list[asyncio.Future[Run | None]]] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()

        def stopped(run_id: str, run: Run | None) -> None:
            if run_id in self.waiting:
                with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits there any more
                    loop.call_soon_threadsafe(self._stopped, run_id, run)

        self.listener = stopped

    def _stopped(self, run_id: str, run: Run | None) -> None:
        if run is None:
            self.wake.set()  # read it from the store
            return
        for future in self.waiting.pop(run_id, ()):
            if not future.done():
                future.set_result(run)

    def until_stopped(self, run_id: str) -> asyncio.Future[Run | None]:
        """A future that is done once `run_id` no longer runs (succeeded, failed, cancelled, interrupted...):
        with the run as it ended when this process executed it, else None."""
        future: asyncio.Future[Run | None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(run_id, []).append(future)
        self.wake.set()
        if self.task is None:
            running_here.listeners.append(self.listener)
            self.task = asyncio.get_running_loop().create_task(self._watch())
        return future

    async def _watch(self) -> None:
        from baton.runtime.aio import in_store_thread  # aio reads the settings; base is imported before them

        store, reaped_at, interval = self.store, 0.0, self.poll
        try:
            while self.waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), interval)
                self.wake.clear()
                for run_id in [r for r, fs in self.waiting.items() if all(f.done() for f in fs)]:
                    del self.waiting[run_id]  # its waiters were cancelled
                if not self.waiting:
                    break
                look = time.monotonic() - reaped_at > 1.0
                if look:
                    # A run whose owner died ends interrupted: waiting must not outlive it.
                    await in_store_thread(store, store.runs.reap)
                    reaped_at = time.monotonic()
                # A run executing here tells its end itself; only the others are read, but for a look at every
                # one each second (a run cancelled while it waited its turn here ends before it starts).
                elsewhere = [r for r in self.waiting if look or not running_here.here(r)]
                statuses = await in_store_thread(store, store.runs.statuses, elsewhere) if elsewhere else {}
                ended = [r for r, status in statuses.items() if status.finished]
                for run_id in ended:
                    for future in self.waiting.pop(run_id, ()):
                        if not future.done():
                            future.set_result(None)
                # Quick while runs end, slower (up to half a second) while none does.
                interval = self.poll if ended else min(max(self.poll, 0.5), interval * 1.5)
        finally:
            running_here.listeners.remove(self.listener)
            self.task = None
            if self.waiting:  # a waiter came while this watch ended: it needs a watch of its own
                self.task = asyncio.get_running_loop().create_task(self._watch())
                running_here.listeners.append(self.listener)


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Watcher]] = weakref.WeakKeyDictionary()


async def await_for(store: RunStore, run_id: str, *, timeout: float | None = None, poll: float = 0.05) -> Run:
    """`wait_for` for async code: await until a run stops running and return it, never blocking the loop.

    The runs awaited on one loop are watched together, in one read of the store a poll. Cancelled (the task
    awaiting it), it stops waiting; the run goes on.
    """
    from baton.errors import RunError
    from baton.runtime.aio import in_store_thread

    if len(run_id) != RUN_ID_LENGTH:
        run_id = await in_store_thread(store, store.runs.resolve_id, run_id)
    loop = asyncio.get_running_loop()
    by_store = _watchers.setdefault(loop, {})
    watcher = by_store.get(id(store))
    if watcher is None or watcher.store is not store:
        watcher = by_store[id(store)] = _Watcher(store, poll)
    try:
        ended = await asyncio.wait_for(watcher.until_stopped(run_id), timeout)
    except TimeoutError:
        found = await in_store_thread(store, store.runs.get, run_id)
        raise RunError(f"run {found.id} is still {found.status.value} after {timeout} s") from None
    return ended if ended is not None else await in_store_thread(store, store.runs.get, run_id)
