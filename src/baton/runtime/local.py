"""The local runtime: steps execute in this process, one after the other, checkpointed as they go."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from baton._ids import new_run_id
from baton._owner import this_owner
from baton.contracts import validate_json
from baton.errors import RunNotResumable, UserError
from baton.run import Run, StepRecord
from baton.runtime.executor import Failed, Observer, Outcome, RetryLater, Succeeded, execute_attempt
from baton.status import RunStatus, StepStatus
from baton.steps import Step
from baton.store import LostOwnership, RunStore, RunWriter, utcnow
from baton.tokens import count_tokens

__all__ = ["LocalRuntime", "create_run", "plan_resume"]

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


def _heartbeat_for(store: RunStore) -> _Heartbeat:
    with _heartbeats_lock:
        beat = _heartbeats.get(id(store))
        if beat is None:
            beat = _heartbeats[id(store)] = _Heartbeat(store)
        return beat


class LocalRuntime:
    """Runs a pattern's steps in this process; `submit` runs them on a background thread."""

    name = "local"

    def __init__(self, max_workers: int = 4) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._max_workers = max_workers

    def run(self, store: RunStore, pattern: Any, value: BaseModel, observer: Observer | None = None) -> Run:
        """Record a new run of `pattern` on the validated `value`, execute it to the end, return it."""
        owner = this_owner()
        with store.writer() as writer:
            run_id, input_json, now, input_tokens = create_run(writer, store, pattern, value, owner, pending=False)
            assert run_id is not None
            base = Run(
                id=run_id, pipeline=pattern.name, status=RunStatus.RUNNING, input=json.loads(input_json),
                created_at=now, steps=(), target=pattern.target, claims=1, started_at=now,
                input_boundary_tokens=input_tokens, correlation_id=run_id, kind=getattr(pattern, "kind", "pipeline"),
            )  # fmt: skip
            return self._execute(store, writer, base, owner, pattern, value, 0, 1, observer)

    def resume(self, store: RunStore, pattern: Any, run_id: str, observer: Observer | None = None) -> Run:
        """Continue a failed or interrupted run of `pattern` at its first unfinished step."""
        run = store.runs.get(run_id)
        if run.pipeline != pattern.name:
            raise RunNotResumable(f"run {run.id} belongs to pipeline '{run.pipeline}', not '{pattern.name}'")
        idx, value, attempt = plan_resume(run, pattern.steps, groups=_groups(pattern))
        owner = this_owner()
        resumable = [RunStatus.FAILED, RunStatus.INTERRUPTED]
        # Conditional on the run being as it was read: another resume in between would make the plan stale.
        if not store.runs.claim(run.id, owner, start_idx=idx, attempt=attempt, statuses=resumable, claims=run.claims):
            raise RunNotResumable(f"run {run.id} changed while resuming (another process resumed it); look again")
        with store.writer() as writer:
            return self._execute(store, writer, run, owner, pattern, value, idx, attempt, observer)

    def submit(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        *,
        correlation_id: str | None = None,
        trigger_event: str | None = None,
        delivery: tuple[str, str | None] | None = None,
    ) -> str | None:
        """Record a pending run and execute it on a background thread; returns its id at once.

        A run that handles an event's `delivery` (see `baton.events`) is not created, and None is returned,
        when the event was already handed to that subscriber.
        """
        owner = this_owner()
        with store.writer() as writer:
            run_id, *_ = create_run(
                writer, store, pattern, value, owner, pending=True,
                correlation_id=correlation_id, trigger_event=trigger_event, delivery=delivery,
            )  # fmt: skip
        if run_id is None:
            return None
        # The heartbeat keeps the pending run from looking abandoned while it waits for a thread.
        _heartbeat_for(store).add(run_id, owner)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="baton-run")
        try:
            future = self._pool.submit(self._start_submitted, store, pattern, run_id, owner)
        except RuntimeError:
            # The interpreter is shutting down and takes no new threads: the run it recorded runs here.
            self._start_submitted(store, pattern, run_id, owner)
            return run_id
        future.add_done_callback(lambda f: _log_failure(f, run_id))
        return run_id

    def resume_later(self, store: RunStore, pattern: Any, run_id: str) -> str:
        """Make a failed or interrupted run pending again at once, and continue it on a background thread."""
        run = store.runs.get(run_id)
        plan_resume(run, pattern.steps, groups=_groups(pattern))  # refuses now what cannot resume
        return self._reopen(store, pattern, run, ())

    def retry_from(self, store: RunStore, pattern: Any, run_id: str, step: str) -> str:
        """Discard the checkpoints of `step` and of what follows it, and run them again in the background."""
        run = store.runs.get(run_id)
        return self._reopen(store, pattern, run, plan_rewind(run, pattern, step))

    def approve(self, store: RunStore, pattern: Any, run_id: str, *, wait: bool = False) -> str:
        """Approve a run awaiting approval: it goes on at the step it waited before (here, with `wait`)."""
        owner = this_owner()
        if store.steps.decide(run_id, approve=True, now=utcnow(), runtime=self.name, owner=owner) < 0:
            raise RunNotResumable(f"run {run_id} is not awaiting approval")
        _heartbeat_for(store).add(run_id, owner)
        if wait:
            self._start_submitted(store, pattern, run_id, owner)
            return run_id
        return self._start_later(store, pattern, run_id, owner)

    def _reopen(self, store: RunStore, pattern: Any, run: Run, rewind: Sequence[int]) -> str:
        owner = this_owner()
        if not store.runs.reopen(
            run.id, claims=run.claims, runtime=self.name, now=utcnow(), owner=owner, rewind=rewind
        ):
            raise RunNotResumable(f"run {run.id} changed while resuming (another process resumed it); look again")
        _heartbeat_for(store).add(run.id, owner)
        return self._start_later(store, pattern, run.id, owner)

    def _start_later(self, store: RunStore, pattern: Any, run_id: str, owner: str) -> str:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="baton-run")
        future = self._pool.submit(self._start_submitted, store, pattern, run_id, owner)
        future.add_done_callback(lambda f: _log_failure(f, run_id))
        return run_id

    def _start_submitted(self, store: RunStore, pattern: Any, run_id: str, owner: str) -> Run:
        try:
            run = store.runs.get(run_id)
            if run.status is not RunStatus.PENDING:
                return run  # cancelled while it waited
            idx, value, attempt = plan_resume(run, pattern.steps, pending_ok=True, groups=_groups(pattern))
            statuses = [RunStatus.PENDING]
            if not store.runs.claim(run_id, owner, start_idx=idx, attempt=attempt, statuses=statuses, only_owner=owner):
                return store.runs.get(run_id)
        finally:
            _heartbeat_for(store).discard(run_id)
        with store.writer() as writer:
            return self._execute(store, writer, run, owner, pattern, value, idx, attempt, observer=None)

    def _execute(
        self,
        store: RunStore,
        writer: RunWriter,
        base: Run,
        owner: str,
        pattern: Any,
        value: BaseModel,
        start_idx: int,
        first_attempt: int,
        observer: Observer | None,
    ) -> Run:
        beat = _heartbeat_for(store)
        beat.add(base.id, owner)
        try:
            if observer is not None:
                observer.run_created(base.id)
            if _groups(pattern):
                records = _supervise(store, writer, base, owner, pattern, value, observer)
            else:
                # A retried run's later steps have attempts already: the next ones are numbered after them.
                prior = [s.attempts for s in base.steps]
                records = _loop(
                    store, writer, base.id, owner, pattern.steps, value, start_idx, first_attempt, observer, prior
                )
        except LostOwnership:
            records = None  # another process declared the run interrupted; the store says what happened
        except BaseException as exc:
            # Ctrl-C or a dying interpreter: leave the run resumable instead of "running" forever.
            _abandon(store, base.id, owner, exc)
            raise
        finally:
            beat.discard(base.id)
        if records is None:
            return store.runs.get(base.id)
        # The clean path (every step succeeded at its first attempt) is built from what was just written,
        # without reading it back; anything else is read from the store, the one source of truth.
        final = records[-1]
        base.status, base.output, base.steps, base.finished_at = (
            RunStatus.SUCCEEDED, final.output, tuple(records), final.finished_at,
        )  # fmt: skip
        return base


def create_run(
    writer: RunWriter,
    store: RunStore,
    pattern: Any,
    value: BaseModel,
    owner: str,
    *,
    pending: bool,
    runtime: str = "local",
    correlation_id: str | None = None,
    trigger_event: str | None = None,
    delivery: tuple[str, str | None] | None = None,
) -> tuple[str | None, str, datetime, int | None]:
    """Record a new run of `pattern` on `value` (every runtime's): (its id, or None when the event `delivery`
    was already made; its input's JSON; now; the input's tokens when a model reads it).

    A run owned by one process holds a lease on the whole run; a celery run's steps hold theirs instead.
    """
    run_id = new_run_id()
    input_json = value.model_dump_json()
    # The run's input is a boundary too when a model reads it.
    input_tokens = count_tokens(input_json) if 0 in boundaries_to_measure(pattern.steps[:1]) else None
    now = utcnow()
    created = writer.create_run(
        run_id=run_id,
        pipeline=pattern.name,
        target=pattern.target,
        input_json=input_json,
        step_names_json=json.dumps(pattern.step_names),
        owner=owner,
        now=now,
        lease_until=now + store.lease if runtime == "local" else None,
        pending=pending,
        input_tokens=input_tokens,
        runtime=runtime,
        correlation_id=correlation_id,
        trigger_event=trigger_event,
        kind=getattr(pattern, "kind", "pipeline"),
        delivery=delivery,
    )
    if not created:
        return None, input_json, now, input_tokens
    return run_id, input_json, now, input_tokens


def _attempts(
    store: RunStore,
    writer: RunWriter,
    run_id: str,
    owner: str,
    step: Step,
    idx: int,
    value: BaseModel,
    *,
    attempt: int,
    last: bool,
    measure: bool,
    observer: Observer | None,
    end_run: bool = True,
) -> tuple[Outcome | None, int, bool]:
    """The attempts of one step under its Retry policy.

    Returns the final outcome (None when a cancel stopped the retrying), the last attempt's number, and
    whether there was more than one attempt.
    """
    this_go = 1
    while True:
        if observer is not None:
            observer.step_started(run_id, idx, step.name, attempt)
            t0 = time.perf_counter()
        outcome = execute_attempt(
            store, writer, run_id, owner, step, idx, value,
            attempt=attempt, attempts_this_go=this_go, last=last, measure=measure, end_run=end_run,
        )  # fmt: skip
        if observer is not None:
            observer.step_finished(run_id, idx, step.name, outcome, time.perf_counter() - t0)
        if isinstance(outcome, Succeeded) and outcome.emitted:
            from baton.events import dispatch_soon  # events build on the runtimes

            dispatch_soon(store, "local")
        if not isinstance(outcome, RetryLater):
            return outcome, attempt, this_go > 1
        if outcome.cancel_requested:
            return None, attempt, True
        _pause(outcome.delay)
        attempt, this_go = outcome.next_attempt, this_go + 1
        if store.steps.start_attempt(run_id, owner, idx, attempt):
            return None, attempt, True


def _record(step: Step, outcome: Succeeded, attempt: int) -> StepRecord:
    r = outcome.result
    return StepRecord(
        step.name, StepStatus.SUCCEEDED, attempt, json.loads(r.output_json or "null"),
        duration_ms=(r.finished_at - r.started_at).total_seconds() * 1000.0,
        started_at=r.started_at, finished_at=r.finished_at,
    )  # fmt: skip


def _loop(
    store: RunStore,
    writer: RunWriter,
    run_id: str,
    owner: str,
    steps: Sequence[Step],
    value: BaseModel,
    start_idx: int,
    first_attempt: int,
    observer: Observer | None,
    prior: Sequence[int] = (),
) -> list[StepRecord] | None:
    """Execute the steps; returns their records when all succeeded at once, None when the store must tell.

    `prior` holds the attempts each step already made (a retried run's), which later attempts follow.
    """
    last = len(steps) - 1
    measured = boundaries_to_measure(steps)
    records: list[StepRecord] = []
    clean = True
    for idx in range(start_idx, len(steps)):
        step = steps[idx]
        if step.approval and not store.steps.approved(run_id, idx):
            store.steps.await_approval(run_id, idx, utcnow())
            return None
        outcome, attempt, retried = _attempts(
            store, writer, run_id, owner, step, idx, value,
            attempt=first_attempt if idx == start_idx else (prior[idx] if idx < len(prior) else 0) + 1,
            last=idx == last, measure=idx in measured,
            observer=observer,
        )  # fmt: skip
        if outcome is None:
            store.runs.end_cancelled(run_id, owner)
            return None
        if isinstance(outcome, Failed):
            return None
        assert isinstance(outcome, Succeeded)
        value = outcome.value
        clean = clean and not retried and not outcome.called_models  # those are read back from the store
        records.append(_record(step, outcome, attempt))
        if outcome.cancel_requested and idx < last:
            store.runs.end_cancelled(run_id, owner)
            return None
    return records if clean and start_idx == 0 else None


def _supervise(
    store: RunStore, writer: RunWriter, base: Run, owner: str, pattern: Any, value: BaseModel, observer: Observer | None
) -> None:
    """Router, then the chosen workers in parallel (each checkpointed on its own), then the merge.

    On a resume, what succeeded (or was skipped) is replayed from the store; only the rest runs. The run is
    read back from the store afterwards, so this returns nothing.
    """
    run_id, steps = base.id, pattern.steps
    recorded = dict(enumerate(base.steps))
    measured = boundaries_to_measure(steps)

    def done(idx: int) -> StepRecord | None:
        record = recorded.get(idx)
        return record if record is not None and record.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) else None

    def next_attempt(idx: int) -> int:
        record = recorded.get(idx)
        return record.attempts + 1 if record is not None else 1

    router = steps[0]
    if (record := done(0)) is not None:
        route = router.output.model_validate(record.output)
    else:
        outcome, _, _ = _attempts(
            store, writer, run_id, owner, router, 0, value,
            attempt=next_attempt(0), last=False, measure=0 in measured, observer=observer,
        )  # fmt: skip
        if outcome is None or (isinstance(outcome, Succeeded) and outcome.cancel_requested):
            store.runs.end_cancelled(run_id, owner)
            return None
        if not isinstance(outcome, Succeeded):
            return None
        route = outcome.value
    keys = list(pattern.workers)
    chosen = {i + 1: key for i, key in enumerate(keys) if getattr(route, key) is not None}
    unchosen = [(i + 1, key) for i, key in enumerate(keys) if i + 1 not in chosen and done(i + 1) is None]
    if unchosen:
        store.steps.mark_skipped(run_id, owner, unchosen)
    outputs: dict[str, Any] = {}
    to_run = []
    for idx, key in chosen.items():
        if (record := done(idx)) is not None:
            outputs[key] = steps[idx].output.model_validate(record.output)
        else:
            to_run.append((idx, key))

    observer = _Serialized(observer) if observer is not None else None

    def work(item: tuple[int, str]) -> tuple[str, Outcome | None]:
        # Each thread checkpoints through a connection of its own, given back when the worker ends; a
        # failure ends the worker, not the run.
        idx, key = item
        with store.writer(scoped=True) as own:
            outcome, _, _ = _attempts(
                store, own, run_id, owner, steps[idx], idx, getattr(route, key),
                attempt=next_attempt(idx), last=False, measure=idx in measured, observer=observer, end_run=False,
            )  # fmt: skip
        return key, outcome

    failed: list[str] = []
    cancelled = False
    pool = ThreadPoolExecutor(
        max_workers=min(pattern.max_parallel, max(1, len(to_run))), thread_name_prefix="baton-worker"
    )
    try:
        for key, outcome in pool.map(work, to_run):
            if isinstance(outcome, Succeeded):
                outputs[key] = outcome.value
                cancelled = cancelled or outcome.cancel_requested
            elif outcome is None:
                cancelled = True
            else:
                failed.append(key)
    except BaseException:
        # Ctrl-C (or a worker's own crash): workers not yet started never start, and the run is marked
        # interrupted at once; the ones in flight find it gone at their checkpoint.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if failed:
        store.runs.end_failed(run_id, owner, failed[0])
        return None
    if cancelled:
        store.runs.end_cancelled(run_id, owner)
        return None
    merge_idx = len(steps) - 1
    merged = steps[merge_idx].input.model_validate({key: outputs.get(key) for key in keys})
    outcome, _, _ = _attempts(
        store, writer, run_id, owner, steps[merge_idx], merge_idx, merged,
        attempt=next_attempt(merge_idx), last=True, measure=merge_idx in measured, observer=observer,
    )  # fmt: skip
    if outcome is None:
        store.runs.end_cancelled(run_id, owner)
    return None


class _Serialized:
    """An observer whose methods are called one at a time, however many worker threads report."""

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


def _pause(seconds: float) -> None:
    """Wait before a retry (a function of its own so that tests can see the waits)."""
    time.sleep(seconds)


def boundaries_to_measure(steps: Sequence[Step]) -> frozenset[int]:
    """The steps whose output a model writes or reads: their boundary's tokens are worth counting."""
    is_agent = [getattr(s, "instructions", None) is not None for s in steps]
    return frozenset(i for i in range(len(steps)) if is_agent[i] or (i + 1 < len(steps) and is_agent[i + 1]))


def _log_failure(future: Future[Run], run_id: str) -> None:
    # A run's own failures are in the store; this is for errors around it (the store unreachable, say).
    exc = future.exception()
    if exc is not None:
        log.error("submitted run %s could not execute: %s", run_id, exc, exc_info=exc)


def _abandon(store: RunStore, run_id: str, owner: str, exc: BaseException) -> None:
    # If this fails too, the process is going down anyway; the reaper will find the run by its dead owner.
    with contextlib.suppress(Exception):
        store.runs.reap_owned(run_id, owner, f"the run stopped: {type(exc).__name__}")


def _groups(pattern: Any) -> bool:
    return getattr(pattern, "kind", "pipeline") == "supervisor"


def plan_rewind(run: Run, pattern: Any, step: str) -> list[int]:
    """The steps to run again when `run` is retried from `step`, that one first; refuses what cannot be."""
    recorded = [s.name for s in run.steps]
    if recorded != list(pattern.step_names):
        raise RunNotResumable(
            f"run {run.id} cannot be retried: it recorded steps {recorded}, but pipeline '{run.pipeline}' now has "
            f"{list(pattern.step_names)}. Its code changed; start a new run instead."
        )
    if step not in recorded:
        raise UserError(f"run {run.id} has no step {step!r}; its steps are {recorded}")
    if not run.status.finished:
        raise RunNotResumable(f"run {run.id} is {run.status.value}; cancel it or wait for it to end, then retry")
    idx = recorded.index(step)
    if run.steps[idx].status is StepStatus.SKIPPED:
        raise RunNotResumable(
            f"step '{step}' of run {run.id} was skipped (not routed to); retry from the router to route again"
        )
    return pattern.rerun_from(idx)


def plan_resume(
    run: Run, steps: Sequence[Step], *, pending_ok: bool = False, groups: bool = False
) -> tuple[int, BaseModel, int]:
    """Where a run goes on: (first unfinished step, its input, its next attempt number).

    With `groups` (a supervisor), the steps are not a chain: the run's own input is returned, and the
    pattern replays what is done and runs the rest itself.
    """
    recorded = [s.name for s in run.steps]
    current = [s.name for s in steps]
    if recorded != current:
        raise RunNotResumable(
            f"run {run.id} cannot resume: it recorded steps {recorded}, but pipeline '{run.pipeline}' now has "
            f"{current}. Its code changed; start a new run instead."
        )
    if run.status is RunStatus.SUCCEEDED:
        raise RunNotResumable(f"run {run.id} already succeeded; there is nothing to resume")
    if run.status is RunStatus.CANCELLED:
        raise RunNotResumable(f"run {run.id} was cancelled; start a new run instead")
    if run.status is RunStatus.AWAITING_APPROVAL:
        raise RunNotResumable(f"run {run.id} is awaiting approval: baton approve {run.id} (or reject it)")
    if run.status is RunStatus.RUNNING:
        raise RunNotResumable(f"run {run.id} is running in another process; cancel it first or wait")
    if run.status is RunStatus.PENDING and not pending_ok:
        raise RunNotResumable(f"run {run.id} is pending: the process that submitted it will start it")
    done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
    idx = next(i for i, s in enumerate(run.steps) if s.status not in done)
    if idx == 0 or groups:
        value = validate_json(steps[0].input, json.dumps(run.input), step=steps[0].name, where="recorded run input")
        if groups:
            return idx, value, run.steps[idx].attempts + 1
    else:
        prev = run.steps[idx - 1]
        # Replay the checkpoint: it must still satisfy the contracts on both sides of the boundary.
        raw = json.dumps(prev.output)
        validate_json(steps[idx - 1].output, raw, step=prev.name, where="checkpoint")
        value = validate_json(steps[idx].input, raw, step=steps[idx].name, where="input (replayed checkpoint)")
    return idx, value, run.steps[idx].attempts + 1
