"""The local runtime: a pattern's plan executes in this process, checkpointed as it goes.

- `run` follows a new run in the caller's thread, sync steps right there (the fastest path for a script).
- `arun` follows it on the caller's event loop: async steps are awaited on it, sync steps run on threads.
- `submit`, `resume`, `retry_from` and `approve` record what they start and return the run id at once. The
  run executes on the process's background loop (`baton.runtime.aio`), at most `BATON_MAX_IN_FLIGHT` runs at
  a time; those past the limit wait, pending in the store, and start in the order they came.

One driver (`_Driver`) interprets a plan in every case; what differs is its mode (`Here` or `OnLoop`, see
`baton.runtime.executor`): parallel branches are tasks on the loop, or threads with their own connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from baton._owner import this_owner
from baton.budgets import Budget
from baton.errors import RunNotResumable
from baton.patterns.plan import Done, Fail, RunSteps, States, resume_states, rewind_plan
from baton.run import Run, StepRecord
from baton.runtime.aio import background, in_store_thread, refuse_on_own_loop, submit_off_loop
from baton.runtime.base import Observer, running_here
from baton.runtime.executor import Attempt, Failed, Here, Mode, OnLoop, Outcome, RetryLater, Succeeded, aexecute, drive
from baton.runtime.records import create_run, read_run, resumable
from baton.settings import current_settings
from baton.status import RunStatus, StepStatus
from baton.store import LostOwnership, RunStore, RunWriter, utcnow

__all__ = ["LocalRuntime"]

log = logging.getLogger("baton.runtime")


class _Heartbeat:
    """Keeps the lease of this process's running runs fresh while their steps take their time."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.active: dict[str, str] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, run_id: str, owner: str) -> None:
        with self.lock:
            self.active[run_id] = owner
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="baton-heartbeat", daemon=True)
                self.thread.start()

    def discard(self, run_id: str) -> None:
        with self.lock:
            self.active.pop(run_id, None)

    def _loop(self) -> None:
        interval = max(1.0, self.store.lease.total_seconds() / 3)
        while True:
            time.sleep(interval)
            with self.lock:
                owned = dict(self.active)
            for owner in set(owned.values()):
                try:
                    self.store.runs.heartbeat(owner, [r for r, o in owned.items() if o == owner])
                except Exception:  # a database hiccup must not end the heartbeat; the next beat tries again
                    continue


_heartbeats: dict[int, _Heartbeat] = {}
_heartbeats_lock = threading.Lock()


def _forget_heartbeats() -> None:
    # A forked child has no heartbeat thread: it starts its own when it first needs one.
    global _heartbeats_lock
    _heartbeats.clear()
    _heartbeats_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_heartbeats)


def _heartbeat_for(store: RunStore) -> _Heartbeat:
    with _heartbeats_lock:
        beat = _heartbeats.get(id(store))
        if beat is None:
            beat = _heartbeats[id(store)] = _Heartbeat(store)
        return beat


class _Admission:
    """The background runs of this process: at most `BATON_MAX_IN_FLIGHT` execute at once on the background
    loop; the others wait in the order they came (pending in the store, their lease kept fresh)."""

    def __init__(self) -> None:
        self.waiting: collections.deque[Callable[[], Coroutine[Any, Any, Any]]] = collections.deque()
        self.running = 0
        self.lock = threading.Condition()
        self.outstanding = 0  # admitted or waiting, from any thread: what the end of the interpreter waits for
        self.drain_registered = False

    def add(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Queue `job` (a coroutine function) from any thread."""
        with self.lock:
            self.outstanding += 1
            if not self.drain_registered:
                # A script that submits runs and ends waits for them, as it would for threads it started. It
                # must wait before the interpreter shuts its thread pools down (which `atexit` is too late for).
                try:
                    threading._register_atexit(self.drain)  # type: ignore[attr-defined]
                    self.drain_registered = True
                except RuntimeError:
                    pass  # the interpreter is ending: whoever submits now (a dispatcher) is waited for
        background().loop().call_soon_threadsafe(self._queue, job)

    def _queue(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.waiting.append(job)
        self._next()

    def _next(self) -> None:
        limit = current_settings().max_in_flight
        loop = asyncio.get_running_loop()
        while self.running < limit and self.waiting:
            job = self.waiting.popleft()
            self.running += 1
            loop.create_task(job()).add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.running -= 1
        with self.lock:
            self.outstanding -= 1
            self.lock.notify_all()
        if not task.cancelled() and task.exception() is not None:
            # A run's own failures are in the store; this is for errors around it (the store unreachable, say).
            log.error("a background run could not execute: %s", task.exception(), exc_info=task.exception())
        self._next()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every background run of this process ended (True), or `timeout` passed (False)."""
        with self.lock:
            return self.lock.wait_for(lambda: self.outstanding == 0, timeout)

    def after_fork(self) -> None:
        """In a forked child: none of the parent's runs executes here, and its lock may have been held."""
        self.waiting.clear()
        self.running = self.outstanding = 0
        self.lock = threading.Condition()


class LocalRuntime:
    """Runs a pattern's steps in this process: in the caller's thread or loop, or on the background loop."""

    name = "local"
    executes_here = True

    def __init__(self) -> None:
        self._admission = _Admission()
        os.register_at_fork(after_in_child=self._admission.after_fork)

    def run(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        observer: Observer | None = None,
        *,
        budget: Budget | None = None,
    ) -> Run:
        """Record a new run of `pattern` on the validated `value`, execute it here to the end, return it."""
        refuse_on_own_loop(f"{pattern.name}.run()", f"await {pattern.name}.arun()")
        owner = this_owner()
        with store.writer() as writer:
            base, states = self._new(writer, store, pattern, value, owner, budget)
            ended = drive(self._follow(Here(store, writer), base, owner, pattern, states, observer))
        assert ended is not None  # read back
        return ended

    async def arun(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        observer: Observer | None = None,
        *,
        budget: Budget | None = None,
    ) -> Run:
        """Record a new run and execute it to the end on the running loop; cancelled, it is left interrupted."""
        owner = this_owner()
        mode = OnLoop(store)
        base, states = await in_store_thread(
            store, lambda: self._new(store.kept_writer(), store, pattern, value, owner, budget)
        )
        ended = await self._follow(mode, base, owner, pattern, states, observer)
        assert ended is not None  # read back
        return ended

    def _new(
        self, writer: RunWriter, store: RunStore, pattern: Any, value: BaseModel, owner: str, budget: Budget | None
    ) -> tuple[Run, States]:
        run_id, input_json, now, input_tokens = create_run(
            writer, store, pattern, value, owner, pending=False, budget=budget
        )
        assert run_id is not None
        base = Run(
            id=run_id, pipeline=pattern.name, status=RunStatus.RUNNING, input=json.loads(input_json),
            created_at=now, steps=(), target=pattern.target, claims=1, started_at=now,
            input_boundary_tokens=input_tokens, correlation_id=run_id, kind=pattern.kind,
        )  # fmt: skip
        return base, States(input_json=input_json, input_value=value)

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
        """Record a pending run and execute it on the background loop; returns its id at once.

        A run that handles an event's `delivery` (see `baton.events`) is not created, and None is returned,
        when the event was already handed to that subscriber.
        """
        owner = this_owner()
        with store.writer() as writer:
            run_id, input_json, now, input_tokens = create_run(
                writer, store, pattern, value, owner, pending=True,
                correlation_id=correlation_id, trigger_event=trigger_event, delivery=delivery, budget=budget,
            )  # fmt: skip
        if run_id is None:
            return None
        # What the run starts from is known here: it need not be read back when its turn comes.
        base = Run(
            id=run_id, pipeline=pattern.name, status=RunStatus.PENDING, input=json.loads(input_json),
            created_at=now, steps=(), target=pattern.target, input_boundary_tokens=input_tokens,
            correlation_id=correlation_id or run_id, trigger_event=trigger_event, kind=pattern.kind,
        )  # fmt: skip
        fresh = (base, States(input_json=input_json, input_value=value))
        return self._start_later(store, pattern, run_id, owner, fresh=fresh)

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
        """`submit` for async code: the run is recorded without blocking the caller's loop."""
        where = {
            "correlation_id": correlation_id,
            "trigger_event": trigger_event,
            "delivery": delivery,
            "budget": budget,
        }
        return await submit_off_loop(self, store, pattern, value, **where)

    def resume(self, store: RunStore, pattern: Any, run_id: str, observer: Observer | None = None) -> str:
        """Make a failed or interrupted run pending again at once, and continue it on the background loop."""
        run, _ = resumable(store, pattern, run_id)
        return self._reopen(store, pattern, run, (), observer)

    def retry_from(
        self, store: RunStore, pattern: Any, run_id: str, step: str, observer: Observer | None = None
    ) -> str:
        """Discard the checkpoints of `step` and of what follows it, and run them again in the background."""
        run = read_run(store, pattern, run_id)
        return self._reopen(store, pattern, run, rewind_plan(run, pattern, step), observer)

    def approve(self, store: RunStore, pattern: Any, run_id: str) -> str:
        """Approve a run awaiting approval: it goes on, in the background, at the step it waited before."""
        owner = this_owner()
        if store.steps.decide(run_id, approve=True, now=utcnow(), runtime=self.name, owner=owner) < 0:
            raise RunNotResumable(f"run {run_id} is not awaiting approval")
        return self._start_later(store, pattern, run_id, owner)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every run this process started in the background ended; False if `timeout` passed."""
        refuse_on_own_loop("drain()", "await baton.await_run() for the runs you need")
        return self._admission.drain(timeout)

    def _reopen(self, store: RunStore, pattern: Any, run: Run, rewind: Sequence[int], observer: Observer | None) -> str:
        owner = this_owner()
        if not store.runs.reopen(
            run.id, claims=run.claims, runtime=self.name, now=utcnow(), owner=owner, rewind=rewind
        ):
            raise RunNotResumable(f"run {run.id} changed while resuming (another process resumed it); look again")
        return self._start_later(store, pattern, run.id, owner, observer)

    def _start_later(
        self,
        store: RunStore,
        pattern: Any,
        run_id: str,
        owner: str,
        observer: Observer | None = None,
        *,
        fresh: tuple[Run, States] | None = None,
    ) -> str:
        # The heartbeat keeps the pending run from looking abandoned while it waits for its turn.
        _heartbeat_for(store).add(run_id, owner)
        running_here.started(run_id, lambda exc: _abandon(store, run_id, owner, exc))
        self._admission.add(lambda: self._start_pending(store, pattern, run_id, owner, observer, fresh))
        return run_id

    async def _start_pending(
        self,
        store: RunStore,
        pattern: Any,
        run_id: str,
        owner: str,
        observer: Observer | None,
        fresh: tuple[Run, States] | None,
    ) -> None:
        """Claim a pending run and drive it: a new one from what `submit` knew (`fresh`), any other from the
        store (a resume's, a retry's, an approval's)."""
        mode = OnLoop(store)
        ended: Run | None = None
        try:
            try:
                if fresh is not None:
                    run, states = fresh
                else:
                    run = await mode.db(store.runs.get, run_id)
                    if run.status is not RunStatus.PENDING:
                        return  # cancelled while it waited
                    states = resume_states(run, pattern, pending_ok=True)
                start = pattern.first(states)
                claim = functools.partial(
                    store.runs.claim, run_id, owner, start_idx=start, attempt=states.attempts(start) + 1,
                    statuses=[RunStatus.PENDING], only_owner=owner,
                )  # fmt: skip
                if not await mode.db(claim):
                    return  # cancelled while it waited
                run.status, run.claims, run.started_at = RunStatus.RUNNING, run.claims + 1, utcnow()
            finally:
                _heartbeat_for(store).discard(run_id)
            # Not read back when it ends: whoever waits for it reads it (once), or has it from here.
            ended = await self._follow(mode, run, owner, pattern, states, observer, read_back=False)
        finally:
            running_here.stopped(run_id, ended)

    async def _follow(
        self,
        mode: Mode,
        base: Run,
        owner: str,
        pattern: Any,
        states: States,
        observer: Observer | None,
        *,
        read_back: bool = True,
    ) -> Run | None:
        """Drive the run's plan to its end and return the run as it ended (None when that means reading it
        back from the store and `read_back` is False)."""
        store = mode.store
        beat = _heartbeat_for(store)
        beat.add(base.id, owner)
        try:
            if observer is not None:
                observer.run_created(base.id)
            records = await _Driver(mode, base.id, owner, pattern, observer).drive(states)
        except LostOwnership:
            records = None  # another process declared the run interrupted; the store says what happened
        except BaseException as exc:
            # Ctrl-C, a cancelled task, or a dying interpreter: leave the run resumable, not "running" forever.
            await mode.anyway(_abandon, store, base.id, owner, exc)
            raise
        finally:
            beat.discard(base.id)
        if records is None:
            return await mode.db(store.runs.get, base.id) if read_back else None
        # The clean path (every step succeeded at its first attempt) is built from what was just written,
        # without reading it back; anything else is read from the store, the one source of truth.
        final = records[-1]
        base.status, base.output, base.steps, base.finished_at = (
            RunStatus.SUCCEEDED, final.output, tuple(records), final.finished_at,
        )  # fmt: skip
        return base


class _Driver:
    """Interprets one run's plan: asks the pattern what runs next, runs it, until the end."""

    def __init__(self, mode: Mode, run_id: str, owner: str, pattern: Any, observer: Observer | None) -> None:
        self.mode, self.store, self.run_id, self.owner = mode, mode.store, run_id, owner
        self.pattern, self.observer = pattern, observer

    async def drive(self, states: States) -> list[StepRecord] | None:
        """Run the plan to its end; the steps' records when every one ran here at its first attempt (then
        the run need not be read back), else None."""
        mode, store, run_id, owner, pattern = self.mode, self.store, self.run_id, self.owner, self.pattern
        steps = pattern.steps
        records: dict[int, StepRecord] = {}
        clean = not states.steps and not states.prior
        nxt = pattern.plan(states)
        while True:
            if isinstance(nxt, Done):
                return [records[i] for i in range(len(steps))] if clean and len(records) == len(steps) else None
            if isinstance(nxt, Fail):
                await mode.db(store.runs.end_failed, run_id, owner, steps[nxt.step].name)
                return None
            if not isinstance(nxt, RunSteps):
                raise RuntimeError(f"pattern '{pattern.name}' waits for steps that nothing runs: {nxt!r}")
            if nxt.skip:
                await mode.db(store.steps.mark_skipped, run_id, owner, [(i, steps[i].name) for i in nxt.skip])
                for i in nxt.skip:
                    states.ended(i, StepStatus.SKIPPED, 0)
                clean = False
            parallel = bool(nxt.branches) or len(nxt.steps) > 1
            if parallel:
                clean = False
                attempts = [self._attempt(i, states, ends_run=False) for i in nxt.steps]
                done = await self._branches(attempts) if mode.on_loop else self._branch_threads(attempts)
            else:
                idx = nxt.steps[0]
                if steps[idx].approval and not await mode.db(store.steps.approved, run_id, idx):
                    await mode.db(store.steps.await_approval, run_id, idx, utcnow())
                    return None
                done = [(idx, *await self._attempts(self._attempt(idx, states, ends_run=True), mode))]
            failed = cancelled = False
            for idx, outcome, number, retried in done:
                if outcome is None:
                    cancelled = True
                elif isinstance(outcome, Failed):
                    failed = True
                    states.ended(idx, StepStatus.FAILED, number)
                else:
                    assert isinstance(outcome, Succeeded)
                    states.succeeded(idx, outcome.value, outcome.result.output_json, number)
                    records[idx] = _record(steps[idx].name, outcome, number)
                    # Those are read back: their calls, retries and events are the store's to tell.
                    clean = clean and not retried and not outcome.called_models and not outcome.emitted
                    cancelled = cancelled or (outcome.cancel_requested and not pattern.final(idx))
            if failed and not parallel:
                return None  # the step's failure ended the run
            if cancelled and not failed:
                await mode.db(store.runs.end_cancelled, run_id, owner)
                return None
            # A chain says what follows a step without looking at every state again.
            follows = pattern.follows(done[0][0]) if len(done) == 1 and not failed else None
            nxt = follows if follows is not None else pattern.plan(states)

    def _attempt(self, idx: int, states: States, *, ends_run: bool) -> Attempt:
        pattern = self.pattern
        return Attempt(
            run_id=self.run_id, step=pattern.steps[idx], idx=idx, value=pattern.input_of(idx, states),
            number=states.attempts(idx) + 1, this_go=1, owner=self.owner, runtime=LocalRuntime.name,
            final=pattern.final(idx), measure=idx in pattern.measured, ends_run=ends_run,
        )  # fmt: skip

    async def _attempts(
        self, attempt: Attempt, mode: Mode, observer: Observer | None = None
    ) -> tuple[Outcome | None, int, bool]:
        """The attempts of one step under its Retry policy: the final outcome (None when a cancel stopped
        the retrying), the last attempt's number, and whether there was more than one attempt."""
        observer = observer or self.observer
        step = attempt.step
        while True:
            if observer is not None:
                observer.step_started(self.run_id, attempt.idx, step.name, attempt.number)
                t0 = time.perf_counter()
            outcome = await aexecute(mode, attempt)
            if observer is not None:
                observer.step_finished(self.run_id, attempt.idx, step.name, outcome, time.perf_counter() - t0)
            if not isinstance(outcome, RetryLater):
                return outcome, attempt.number, attempt.this_go > 1
            if outcome.cancel_requested:
                return None, attempt.number, True
            await mode.sleep(outcome.delay)
            attempt = attempt.next(outcome.next_attempt)
            if await mode.db(self.store.steps.start_attempt, self.run_id, self.owner, attempt.idx, attempt.number):
                return None, attempt.number, True

    async def _branches(self, attempts: list[Attempt]) -> list[tuple[int, Outcome | None, int, bool]]:
        """Parallel branches as tasks on the loop, at most the pattern's `max_parallel` at once; a failure
        ends its branch, not the run (the next plan says what does)."""
        gate = asyncio.Semaphore(max(1, self.pattern.max_parallel))

        async def branch(attempt: Attempt) -> tuple[int, Outcome | None, int, bool]:
            async with gate:
                return (attempt.idx, *await self._attempts(attempt, self.mode))

        tasks = [asyncio.ensure_future(branch(a)) for a in attempts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # Cancelled (or a branch's own crash): the others stop too, and the run is marked interrupted.
            for task in tasks:
                task.cancel()
            raise

    def _branch_threads(self, attempts: list[Attempt]) -> list[tuple[int, Outcome | None, int, bool]]:
        """Parallel branches from a plain thread: each on a thread with a database connection of its own."""
        observer = _Serialized(self.observer) if self.observer is not None else None

        def work(attempt: Attempt) -> tuple[int, Outcome | None, int, bool]:
            with self.store.writer(scoped=True) as own:
                return (attempt.idx, *drive(self._attempts(attempt, Here(self.store, own), observer)))

        pool = ThreadPoolExecutor(
            max_workers=min(self.pattern.max_parallel, max(1, len(attempts))), thread_name_prefix="baton-branch"
        )
        try:
            done = list(pool.map(work, attempts))
        except BaseException:
            # Ctrl-C (or a branch's own crash): branches not yet started never start, and the run is marked
            # interrupted at once; the ones in flight find it gone at their checkpoint.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return done


def _record(name: str, outcome: Succeeded, attempt: int) -> StepRecord:
    r = outcome.result
    return StepRecord(
        name, StepStatus.SUCCEEDED, attempt, json.loads(r.output_json or "null"),
        duration_ms=(r.finished_at - r.started_at).total_seconds() * 1000.0,
        started_at=r.started_at, finished_at=r.finished_at,
    )  # fmt: skip


class _Serialized:
    """An observer whose methods are called one at a time, however many branch threads report."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def run_created(self, run_id: str) -> None:
        with self.lock:
            self.inner.run_created(run_id)

    def step_started(self, run_id: str, idx: int, name: str, attempt: int) -> None:
        with self.lock:
            self.inner.step_started(run_id, idx, name, attempt)

    def step_finished(self, run_id: str, idx: int, name: str, outcome: Outcome, duration_s: float) -> None:
        with self.lock:
            self.inner.step_finished(run_id, idx, name, outcome, duration_s)


def _abandon(store: RunStore, run_id: str, owner: str, exc: BaseException) -> None:
    # If this fails too, the process is going down anyway; the reaper will find the run by its dead owner.
    with contextlib.suppress(Exception):
        store.runs.reap_owned(run_id, owner, f"the run stopped: {type(exc).__name__}")
