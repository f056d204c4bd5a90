"""The celery runtime: steps execute on `baton worker` processes, with Redis as the broker.

Messages carry ids only (run id, step index, and the count of attempts since the step was started); a
run's input and every checkpoint live in the store. Each step goes through the same executor as on the
local runtime. Reliability comes from three places:

- the broker: tasks are acknowledged late and rejected when their worker process is lost, so a killed
  worker's step is delivered again (at once for a killed prefork child; after `visibility_timeout` on
  Redis when the whole machine vanished);
- the store: a worker takes a step through a lease on its row, so two workers never run it at once, and a
  step whose checkpoint was committed is never run again, however often its message is delivered;
- Celery's countdown: a transient failure is retried by re-queueing the task with exponential backoff and
  jitter, never by sleeping in a worker.

A Supervisor fans out through a Celery chord: its chosen workers are the group, and the join task checks
in the store (not in Celery's results) that every one of them ended before the merge runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from datetime import timedelta
from typing import Any, NoReturn

from pydantic import BaseModel, ValidationError

from baton._owner import owner_alive, this_owner
from baton.contracts import validate_json
from baton.errors import BatonError, BrokerUnavailable, RunError, RunNotResumable, UserError
from baton.patterns.registry import find_pattern
from baton.run import Run
from baton.runtime.executor import Failed, Observer, RetryLater, Succeeded, error_info, execute_attempt
from baton.runtime.local import boundaries_to_measure, create_run, plan_resume, plan_rewind
from baton.settings import Settings
from baton.status import RunStatus, StepStatus
from baton.store import CELERY_OWNER, LostOwnership, RunStore, StepResult, StepState, open_store, utcnow

try:
    import celery
    import celery.exceptions
    from celery import signals
except ImportError as exc:  # pragma: no cover - exercised by the install hint test in a bare venv
    raise UserError('the celery runtime needs Celery and Redis\'s client: pip install "baton[celery]"') from exc

__all__ = ["CeleryRuntime", "broker_display", "celery_app", "check_broker", "worker_argv"]

log = logging.getLogger("baton.celery")

QUEUE = "baton"


class CeleryRuntime:
    """Runs a pattern's steps on Celery workers; `submit` returns at once, `run` waits on the store."""

    name = "celery"

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
        """Record a pending run and queue its first step; returns the run id at once.

        A run that handles an event's `delivery` (see `baton.events`) is not created, and None is returned,
        when the event was already handed to that subscriber.
        """
        _require_target(pattern)
        with store.writer() as writer:
            run_id, *_ = create_run(
                writer, store, pattern, value, CELERY_OWNER, pending=True, runtime=self.name,
                correlation_id=correlation_id, trigger_event=trigger_event, delivery=delivery,
            )  # fmt: skip
        if run_id is None:
            if delivery is not None and trigger_event is not None:
                # Handed over before, but perhaps never queued (the broker failed after the commit): a run
                # still pending is queued again, which is safe (a message delivered twice runs once).
                existing, status, created = store.events.delivery_run(trigger_event, delivery[0])
                stale = created is not None and created < utcnow() - timedelta(seconds=LOST_AFTER)
                if existing is not None and status is RunStatus.PENDING and stale:
                    _send(step_task, existing, 0)
            return None
        _send(step_task, run_id, 0)
        return run_id

    def run(self, store: RunStore, pattern: Any, value: BaseModel, observer: Observer | None = None) -> Run:
        """Submit, then wait on the store until the run stops (never on Celery's results)."""
        run_id = self.submit(store, pattern, value)
        if observer is not None:
            observer.run_created(run_id)
        from baton.api import wait  # the store is what every runtime is waited on

        return wait(run_id, store=store)

    def resume(self, store: RunStore, pattern: Any, run_id: str, observer: Observer | None = None) -> Run:
        """Queue a failed or interrupted run again at its first unfinished step; returns it (pending).

        A celery run still pending or running that no worker holds (its message was lost with the broker's
        data, say) is queued again as it is: a message delivered twice is safe.
        """
        _require_target(pattern)
        run = store.runs.get(run_id)
        if run.pipeline != pattern.name:
            raise RunNotResumable(f"run {run.id} belongs to pipeline '{run.pipeline}', not '{pattern.name}'")
        supervisor = _is_supervisor(pattern)
        if run.runtime == self.name and run.status in (RunStatus.PENDING, RunStatus.RUNNING):
            return self._requeue_stuck(store, pattern, run, supervisor)
        idx, _, _ = plan_resume(run, pattern.steps, groups=supervisor)
        if not store.runs.reopen(run.id, claims=run.claims, runtime=self.name, now=utcnow()):
            raise RunNotResumable(f"run {run.id} changed while resuming (another process resumed it); look again")
        # A supervisor starts again at its router, which replays its checkpoint and fans out to the workers
        # that did not succeed.
        _send(step_task, run.id, 0 if supervisor else idx)
        if observer is not None:
            observer.run_created(run.id)
        return store.runs.get(run.id)

    def approve(self, store: RunStore, pattern: Any, run_id: str, *, wait: bool = False) -> str:
        """Approve a run awaiting approval: its step is queued again for the workers."""
        _require_target(pattern)
        idx = store.steps.decide(run_id, approve=True, now=utcnow(), runtime=self.name)
        if idx < 0:
            raise RunNotResumable(f"run {run_id} is not awaiting approval")
        _send(step_task, run_id, idx)
        if wait:
            from baton.api import wait as wait_for

            wait_for(run_id, store=store)
        return run_id

    def retry_from(self, store: RunStore, pattern: Any, run_id: str, step: str) -> str:
        """Discard the checkpoints of `step` and of what follows it, and queue the run again from there."""
        _require_target(pattern)
        run = store.runs.get(run_id)
        rewind = plan_rewind(run, pattern, step)
        if not store.runs.reopen(run.id, claims=run.claims, runtime=self.name, now=utcnow(), rewind=rewind):
            raise RunNotResumable(f"run {run.id} changed while retrying (another process resumed it); look again")
        _send(step_task, run.id, 0 if _is_supervisor(pattern) else rewind[0])
        return run.id

    def _requeue_stuck(self, store: RunStore, pattern: Any, run: Run, supervisor: bool) -> Run:
        if [s.name for s in run.steps] != pattern.step_names:
            raise RunNotResumable(f"run {run.id} recorded steps {[s.name for s in run.steps]}; the code has others")
        held = [s.name for s in run.steps if s.status is StepStatus.RUNNING]
        waiting = [s.name for s in run.steps if s.status is StepStatus.PENDING and s.attempts > 0]
        if waiting:
            raise RunNotResumable(
                f"run {run.id} is {run.status.value}: step {', '.join(waiting)} waits in the queue for its next "
                "attempt; wait for it, or cancel the run"
            )
        if store.steps.live_leases(run.id, utcnow()):
            raise RunNotResumable(
                f"run {run.id} is {run.status.value}: a worker is executing {', '.join(held) or 'it'} right now; "
                "wait for it, or cancel it"
            )
        done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
        idx = 0 if supervisor else next((i for i, s in enumerate(run.steps) if s.status not in done), 0)
        _send(step_task, run.id, idx)
        return store.runs.get(run.id)


# A delivery's run still pending this long after it was created is taken for lost with its message.
LOST_AFTER = 30.0


# -- the Celery app -------------------------------------------------------------------------------------


@functools.cache
def celery_app() -> celery.Celery:
    """The Celery app of this process, configured from the environment (BATON_BROKER_URL and friends)."""
    settings = Settings.from_env()
    app = celery.Celery("baton", set_as_current=False)
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        # Kombu looks for messages past their visibility timeout every interval x throttle seconds (100 s by
        # default); a sweep every quarter of the timeout (at most 10 s) brings a lost worker's step back in
        # about the timeout, not minutes after it.
        "unacked_restore_interval": max(1.0, min(10.0, settings.visibility_timeout / 4)),
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        broker_url=settings.broker_url,
        # Chords count their finished members in the result backend; baton never waits on results.
        result_backend=settings.result_backend or settings.broker_url,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Acknowledged when done, and given back when the process running it is lost: a killed worker's
        # step runs again elsewhere. The step's lease and checkpoint make the second delivery safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Chords count their members in keys that expire with the results: a week, so that a fan-out whose
        # workers wait long in a queue still joins (a lost join is recovered by `baton resume`).
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
        task_track_started=False,
    )
    _register_tasks(app)
    return app


def worker_argv(*, concurrency: int, pool: str, loglevel: str) -> list[str]:
    """The arguments `baton worker` starts Celery's worker with."""
    return [
        "worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}", f"--queues={QUEUE}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip


def broker_display(app: celery.Celery) -> str:
    """The broker's URL with its password masked, for messages and logs."""
    conn = app.connection_for_write()
    try:
        return str(conn.as_uri())
    finally:
        conn.release()


def check_broker(app: celery.Celery) -> None:
    """Fail with a clear message when the broker cannot be reached."""
    conn = app.connection_for_write()
    try:
        conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        raise BrokerUnavailable(f"cannot reach the Celery broker at {broker_display(app)}: {exc}") from None
    finally:
        conn.release()


def _register_tasks(app: celery.Celery) -> None:
    options = {"bind": True, "max_retries": None, "acks_late": True, "reject_on_worker_lost": True}
    app.task(name="baton.step", ignore_result=True, **options)(_step_body)
    # A supervisor's worker is a member of a chord, whose count lives in the result backend.
    app.task(name="baton.branch", ignore_result=False, **options)(_branch_body)
    app.task(name="baton.join", ignore_result=True, **options)(_join_body)


def _send(task_name: str, run_id: str, idx: int) -> None:
    celery_app().send_task(task_name, args=(run_id, idx, 1), queue=QUEUE)


step_task = "baton.step"


# -- what a worker does ---------------------------------------------------------------------------------


def _step_body(task: Any, run_id: str, idx: int, this_go: int = 1) -> None:
    _execute(task, run_id, idx, this_go)


def _branch_body(task: Any, run_id: str, idx: int, this_go: int = 1) -> int:
    # A supervisor's worker reads its input from the router's checkpoint.
    _execute(task, run_id, idx, this_go, source=0)
    return idx


def _join_body(task: Any, _results: Any, run_id: str) -> None:
    """After a supervisor's chosen workers: end the run failed if one failed, else run the merge."""
    try:
        _join(task, run_id)
    except (celery.exceptions.Retry, _Requeued):
        raise
    except Exception:
        # As in `_execute`: never let Celery acknowledge a join that did not happen.
        log.exception("run %s: could not join its workers; trying again later", run_id)
        raise task.retry(countdown=_backoff(task)) from None


def _join(task: Any, run_id: str) -> None:
    store = _worker_store()
    brief = store.runs.brief(run_id)
    if brief is None or brief.status not in (RunStatus.RUNNING, RunStatus.PENDING):
        return
    pattern = find_pattern(brief.pipeline, brief.target)
    states = store.steps.states(run_id)
    try:
        chosen = _chosen(pattern, _route(store, pattern, run_id, states))
    except _Stale:
        return  # the join of a fan-out from before the run was retried from its router

    unfinished = [i for i in chosen if i not in states or states[i].status in _OPEN]
    if unfinished:
        # The chord fired before every member ended (a member delivered twice counts twice): look again.
        raise task.retry(countdown=1.0)
    failed = [chosen[i] for i in chosen if states[i].status is not StepStatus.SUCCEEDED]
    if failed:
        store.runs.end_failed(run_id, CELERY_OWNER, failed[0])
        return
    if brief.cancel_requested:
        store.runs.end_cancelled(run_id, CELERY_OWNER)
        return
    merge = len(pattern.steps) - 1
    if _hop() == "step":
        _send(step_task, run_id, merge)
        return
    with contextlib.suppress(_Requeued):
        _execute(task, run_id, merge, 1)


def _backoff(task: Any) -> float:
    """Seconds before a task that failed around its step tries again: doubling from 2, at most 60."""
    return min(60.0, 2.0 * 2 ** (getattr(task.request, "retries", 0) or 0))


class _Requeued(Exception):
    """The step was put back on the queue, with a countdown, as a task of its own."""


def _requeue(task: Any, run_id: str, idx: int, this_go: int, countdown: float) -> NoReturn:
    """Come back to step `idx` after `countdown` seconds: Celery's retry of this task (a chord's member keeps
    its id that way), or, from a join, a step task of its own."""
    if task.name == "baton.join":
        celery_app().send_task(step_task, args=(run_id, idx, this_go), countdown=countdown, queue=QUEUE)
        raise _Requeued
    raise task.retry(args=(run_id, idx, this_go), countdown=countdown)


_OPEN = (StepStatus.PENDING, StepStatus.RUNNING)


def _execute(task: Any, run_id: str, idx: int, this_go: int, source: int | None = None) -> None:
    """Execute step `idx` of a run, then, on the default `run` hop, the steps of the pipeline after it.

    Each step is claimed, executed and checkpointed on its own, exactly as when it is a task of its own; a
    pipeline's next step only skips the round trip through the broker. The run goes back to the broker for
    a retry's countdown, a supervisor's fan-out, or when this worker dies (the message is delivered again,
    and the steps already checkpointed are skipped).
    """
    store = _worker_store()
    me = this_owner()
    step_idx: int | None = idx
    while step_idx is not None:
        current = step_idx
        try:
            step_idx = _execute_step(task, store, me, run_id, current, this_go, source)
        except (celery.exceptions.Retry, _Requeued):
            raise
        except Exception:
            # The database or the broker failed around the step (its own errors are recorded by the
            # executor): give the step back and come again later, rather than let Celery acknowledge the
            # message and leave the run running with nobody to finish it.
            log.exception("run %s, step %d: could not go on; trying again later", run_id, current)
            with contextlib.suppress(Exception):
                store.steps.release(run_id, current, me)
            _requeue(task, run_id, current, this_go, _backoff(task))
        this_go, source = 1, None


class _Stale(RunNotResumable):
    """A message for a step whose input is not there: sent before the run was retried from an earlier step
    (a retry's countdown, a chord's callback). The retry sent the run's messages again; this one is dropped."""


# A step whose worker died this many times while running it is failed: it is what kills them.
MAX_LOST = 3


def _execute_step(
    task: Any, store: RunStore, me: str, run_id: str, idx: int, this_go: int, source: int | None
) -> int | None:
    """One step; returns the step this task goes on with, if any."""
    member = task.name == "baton.branch"  # a supervisor's worker: its join ends the run, whatever happens
    claim = store.steps.claim(run_id, idx, me, utcnow(), source=source)
    if claim.outcome == "busy" and claim.holder is not None:
        dead = owner_alive(claim.holder) is False
        expired = claim.until is not None and claim.until < utcnow()
        if dead or expired:
            claim = store.steps.claim(run_id, idx, me, utcnow(), take_from=claim.holder, expired=not dead)
    if claim.outcome in ("gone", "failed") or (claim.outcome == "cancel" and member):
        return None
    if claim.outcome == "cancel":
        store.runs.end_cancelled(run_id, CELERY_OWNER)
        return None
    if claim.outcome == "busy":
        # Another live worker holds the step (this message was delivered twice): come back when its lease
        # would have run out; by then it has checkpointed, or it is dead and the step is taken over.
        wait = (claim.until - utcnow()).total_seconds() if claim.until else 1.0
        _requeue(task, run_id, idx, this_go, max(0.5, wait + 0.5))
    if claim.outcome == "done":
        pattern = find_pattern(claim.pipeline, claim.target)
        return _after(store, pattern, run_id, idx)  # what follows may not have been queued before a crash
    try:
        if claim.lost >= MAX_LOST:
            raise RunError(
                f"step '{claim.step_names[idx]}' of run {run_id}: its worker died {claim.lost} times while running "
                "it (out of memory, or a crash in native code?); it is not tried again"
            )
        pattern = find_pattern(claim.pipeline, claim.target)
        if tuple(pattern.step_names) != claim.step_names:
            raise RunNotResumable(
                f"run {run_id} recorded steps {list(claim.step_names)}, but pipeline '{pattern.name}' on this "
                f"worker has {pattern.step_names}: the workers run other code than the one that started the run"
            )
        value = _input(store, pattern, run_id, idx, claim.input_json)
    except _Stale as exc:
        log.warning("run %s, step %d: a message from before the run was retried, dropped (%s)", run_id, idx, exc)
        store.steps.release(run_id, idx, me)
        return None
    except (BatonError, ValidationError, ImportError) as exc:
        # The step cannot start here, and would not anywhere: its code, or its input, is wrong.
        _fail_before_start(store, run_id, idx, claim.step_names[idx], claim.attempt, me, exc, end_run=not member)
        return None
    steps = pattern.steps
    last = len(steps) - 1
    if steps[idx].approval and not store.steps.approved(run_id, idx):
        store.steps.await_approval(run_id, idx, utcnow(), lease_owner=me)
        return None
    with _holding(run_id, idx), store.writer() as writer:
        try:
            outcome = execute_attempt(
                store, writer, run_id, CELERY_OWNER, steps[idx], idx, value,
                attempt=claim.attempt, attempts_this_go=this_go, last=idx == last,
                measure=idx in boundaries_to_measure(steps), end_run=not member, lease_owner=me,
            )  # fmt: skip
        except LostOwnership:
            # The run ended, or the lease went (taken over; or its claim was lost to a database crash): a new
            # claim tells which, and what to do.
            _requeue(task, run_id, idx, this_go, 0.5)
    if isinstance(outcome, RetryLater):
        if outcome.cancel_requested and not member:
            store.runs.end_cancelled(run_id, CELERY_OWNER)
        if outcome.cancel_requested:
            return None
        _requeue(task, run_id, idx, this_go + 1, outcome.delay)
    if isinstance(outcome, Failed):
        return None
    assert isinstance(outcome, Succeeded)
    if outcome.emitted:
        from baton.events import dispatch  # events build on the runtimes

        # Its own events only: what others emitted or published is theirs to hand over (or a sweep's).
        dispatch(store, "celery", event_ids=outcome.emitted)
    if outcome.cancel_requested and idx < last and not member:
        store.runs.end_cancelled(run_id, CELERY_OWNER)
        return None
    # A router that ran just now was never done before, so none of its workers has started yet.
    return _after(store, pattern, run_id, idx, route=outcome.value if idx == 0 else None)


def _after(store: RunStore, pattern: Any, run_id: str, idx: int, route: BaseModel | None = None) -> int | None:
    """What follows step `idx`: the pipeline's next step (returned, to go on with in this task on the `run`
    hop; queued on the `step` hop), or a supervisor's fan-out after its router."""
    last = len(pattern.steps) - 1
    if idx >= last:
        return None
    if not _is_supervisor(pattern):
        if _hop() == "run":
            return idx + 1
        _send(step_task, run_id, idx + 1)
    elif idx == 0:
        _fan_out(store, pattern, run_id, route)
    return None


@functools.cache
def _hop() -> str:
    hop = Settings.from_env().celery_hop
    if hop not in ("run", "step"):
        raise UserError(f"BATON_CELERY_HOP={hop!r}: use 'run' (the default) or 'step'")
    return hop


def _fan_out(store: RunStore, pattern: Any, run_id: str, fresh: BaseModel | None = None) -> None:
    """Skip the workers the router did not choose, and start a chord of the chosen ones not yet done.

    `fresh` is the route the router has just produced (then no worker has a row yet); without it, the
    route and the workers' states are read from the store (a redelivery, a resume).
    """
    states = {} if fresh is not None else store.steps.states(run_id)
    route = fresh if fresh is not None else _route(store, pattern, run_id, states)
    chosen = _chosen(pattern, route)
    done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
    unchosen = [
        (i + 1, key)
        for i, key in enumerate(pattern.workers)
        if i + 1 not in chosen and (i + 1 not in states or states[i + 1].status not in done)
    ]
    if unchosen:
        try:
            store.steps.mark_skipped(run_id, CELERY_OWNER, unchosen)
        except LostOwnership:
            return  # the run ended (cancelled) meanwhile
    to_run = [i for i in chosen if i not in states or states[i].status is not StepStatus.SUCCEEDED]
    app = celery_app()
    join = app.signature("baton.join", args=(run_id,), queue=QUEUE)
    if not to_run:
        join.apply_async(args=(None,))
        return
    members = [app.signature("baton.branch", args=(run_id, i, 1), queue=QUEUE) for i in to_run]
    celery.chord(members)(join)


def _route(store: RunStore, pattern: Any, run_id: str, states: dict[int, StepState] | None = None) -> BaseModel:
    state = (states if states is not None else store.steps.states(run_id, [0])).get(0)
    if state is None or state.output_json is None:
        raise _Stale(f"run {run_id}: the router has no checkpoint to route from")
    return validate_json(pattern.steps[0].output, state.output_json, step=pattern.steps[0].name, where="checkpoint")


def _chosen(pattern: Any, route: BaseModel) -> dict[int, str]:
    return {i + 1: key for i, key in enumerate(pattern.workers) if getattr(route, key) is not None}


def _input(store: RunStore, pattern: Any, run_id: str, idx: int, read: str | None = None) -> BaseModel:
    """The validated input of step `idx`, read from the store (the messages carry none).

    `read` is what the claim already read: the run's input for step 0, the router's checkpoint for a
    supervisor's worker, else the previous step's checkpoint.
    """
    steps = pattern.steps
    step = steps[idx]
    if idx == 0:
        raw = read if read is not None else store.runs.input_json(run_id)
        return validate_json(step.input, raw, step=step.name, where="recorded run input")
    if not _is_supervisor(pattern):
        if read is None:
            prev = store.steps.states(run_id, [idx - 1]).get(idx - 1)
            read = prev.output_json if prev is not None else None
        if read is None:
            raise _Stale(f"run {run_id}: step '{steps[idx - 1].name}' has no checkpoint for '{step.name}'")
        validate_json(steps[idx - 1].output, read, step=steps[idx - 1].name, where="checkpoint")
        return validate_json(step.input, read, step=step.name, where="input (checkpoint)")
    if idx < len(steps) - 1:
        route = (
            validate_json(steps[0].output, read, step=steps[0].name, where="checkpoint")
            if read is not None
            else _route(store, pattern, run_id)
        )
        return getattr(route, step.name)
    keys = list(pattern.workers)
    states = store.steps.states(run_id, range(1, len(keys) + 1))
    outputs: dict[str, Any] = {}
    for i, key in enumerate(keys, start=1):
        state = states.get(i)
        if state is not None and state.status is StepStatus.SUCCEEDED and state.output_json is not None:
            outputs[key] = validate_json(steps[i].output, state.output_json, step=key, where="checkpoint")
    return step.input.model_validate({key: outputs.get(key) for key in keys})


def _fail_before_start(
    store: RunStore, run_id: str, idx: int, name: str, attempt: int, me: str, exc: Exception, *, end_run: bool
) -> None:
    now = utcnow()
    result = StepResult(idx=idx, name=name, attempt=attempt, started_at=now, finished_at=now, error=error_info(exc))
    with contextlib.suppress(LostOwnership):
        store.steps.record_failure(run_id, CELERY_OWNER, result, retrying=False, end_run=end_run, lease_owner=me)


def _is_supervisor(pattern: Any) -> bool:
    return getattr(pattern, "kind", "pipeline") == "supervisor"


def _require_target(pattern: Any) -> None:
    if not pattern.target:
        raise UserError(
            f"pattern '{pattern.name}' has no importable target, so workers cannot find it: define it at the top "
            "level of a module (or a file run by `baton run path/file.py:name`)"
        )


# -- worker processes -----------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _holding(run_id: str, idx: int) -> Any:
    """While the block runs, this process's heartbeat renews its lease on the step."""
    _beat.enter(_worker_store(), this_owner(), (run_id, idx))
    try:
        yield
    finally:
        _beat.leave((run_id, idx))


_store: RunStore | None = None


def _worker_store() -> RunStore:
    # One store per worker process, opened after the fork (see `_after_fork`).
    global _store
    if _store is None:
        _store = open_store()
    return _store


# How often, and after how long, a worker hands over events that their emitting process left in the outbox.
SWEEP_SECONDS = 15.0


def _sweep_outbox() -> None:
    from baton.events import dispatch

    while True:
        time.sleep(SWEEP_SECONDS)
        try:
            dispatch(_worker_store(), "celery", older_than_s=SWEEP_SECONDS)
        except Exception:  # the next sweep tries again
            log.warning("could not sweep the event outbox", exc_info=True)


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """The worker's main process sweeps the outbox: events whose dispatch a crash interrupted go out."""
    threading.Thread(target=_sweep_outbox, name="baton-outbox", daemon=True).start()


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A prefork child must not share the parent's database connections: it opens its own."""
    import baton.store as store_module

    for store in list(store_module._stores.values()):
        store.engine.dispose(close=False)
    store_module._stores.clear()
    global _beat, _store
    _beat = _LeaseBeat()
    _store = None
