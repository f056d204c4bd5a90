"""What a worker does with a message: claim the step in the store, execute it, and start what the plan says
comes next. Messages carry ids only (run id, step index, attempts this go, which checkpoint to read).

Three tasks: `baton.step` executes a step (on the default `run` hop, then the chain's next steps in the
same task); `baton.branch` executes a parallel branch, a member of a chord; `baton.join`, the chord's
callback, asks the pattern's plan again once every branch ended.

Every message carries the run's fence (its `claims` when the message was sent). When a run is queued again
(the sweeper found its message lost, or a person resumed it), the fence moves on, and an older message that
turns up late (Redis giving back an unacknowledged one, a chord's join) finds no live run and does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import Any

import celery
import celery.exceptions
from pydantic import BaseModel, ValidationError

from baton._owner import owner_alive, this_owner
from baton.errors import BatonError, BrokerUnavailable, RunError, RunNotResumable
from baton.patterns.plan import Fail, Next, RunSteps, States, StepView, Wait
from baton.patterns.plan import Stale as _Stale
from baton.patterns.registry import find_pattern
from baton.runtime.aio import call_in_background, store_threads
from baton.runtime.celery._app import QUEUE
from baton.runtime.celery._worker import holding, worker_store
from baton.runtime.executor import Attempt, Failed, OnLoop, RetryLater, Succeeded, aexecute, error_info, execute
from baton.settings import Settings
from baton.status import ClaimOutcome, RunStatus, StepStatus
from baton.store import CELERY_OWNER, LostOwnership, RunStore, StepClaim, StepResult, utcnow
from baton.store.trouble import calm_for, is_store_trouble, note_trouble

__all__ = ["BRANCH", "JOIN", "STEP", "read_states", "register_tasks", "start"]

log = logging.getLogger("baton.celery")

STEP, BRANCH, JOIN = "baton.step", "baton.branch", "baton.join"

# A step whose worker died this many times while running it is failed: it is what kills them.
MAX_LOST = 3

# Tries of a step around which something other than the store's or the broker's trouble went wrong, when its
# pattern (and so its Retry policy) could not be found.
MAX_AROUND = 3


def is_trouble(exc: BaseException) -> bool:
    """Whether `exc` is the store's or the broker's trouble (waited out), rather than an error to record."""
    if is_store_trouble(exc) or isinstance(exc, BrokerUnavailable):
        return True
    import kombu.exceptions

    broker = (kombu.exceptions.OperationalError, ConnectionError, TimeoutError)
    try:
        import redis.exceptions

        broker += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    except ImportError:
        pass
    return isinstance(exc, broker)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def register_tasks(app: celery.Celery) -> None:
    """Declare baton's tasks on `app`."""
    options = {"bind": True, "max_retries": None, "acks_late": True, "reject_on_worker_lost": True}
    app.task(name=STEP, ignore_result=True, **options)(_step_body)
    # A parallel branch is a member of a chord, whose count lives in the result backend.
    app.task(name=BRANCH, ignore_result=False, **options)(_branch_body)
    app.task(name=JOIN, ignore_result=True, **options)(_join_body)


# -- starting what a plan says ------------------------------------------------------------------------


def source_of(pattern: Any, idx: int) -> int:
    """Which checkpoint a claim of step `idx` reads on the way: one step's, or (-1) the run's input."""
    reads = pattern.reads(idx)
    return reads[0] if len(reads) == 1 else -1


# A step's timeout is enforced by its executor; Celery's hard time limit (prefork pools only) is the backstop
# for work the executor cannot stop (an async step that blocks its loop, native code holding the GIL): it kills
# the pool's child this long after the timeout, and the step is taken over like one whose worker died.
HARD_LIMIT_GRACE = 30.0


def limits_of(step: Any) -> dict[str, float]:
    """The options that give a step's message Celery's hard time limit, when the step has a timeout."""
    timeout = getattr(step, "timeout", None)
    return {} if timeout is None else {"time_limit": timeout + HARD_LIMIT_GRACE}


def send(
    app: celery.Celery, pattern: Any, run_id: str, idx: int, fence: int | None, *, countdown: float | None = None
) -> None:
    """Queue step `idx` of a run as a task of its own, fenced with the run's `fence`."""
    args = (run_id, idx, 1, source_of(pattern, idx), fence)
    # No result to wait on (baton waits on its store): without this, Celery also subscribes the sender to the
    # task's result in the result backend, and a backend that is down costs the sender 20 s of retries.
    limits = limits_of(pattern.steps[idx])
    app.send_task(STEP, args=args, queue=QUEUE, countdown=countdown, ignore_result=True, **limits)


def own_task(task: Any, pattern: Any, idx: int) -> bool:
    """Whether step `idx` goes through the broker as a task of its own rather than on in `task`: a step with
    a timeout needs its own hard time limit, and a task under one goes no further than its step."""
    if getattr(pattern.steps[idx], "timeout", None) is not None:
        return True
    limit = getattr(task.request, "timelimit", None)
    return bool(limit and any(limit))


def start(app: celery.Celery, store: RunStore, pattern: Any, run_id: str, nxt: Next, fence: int | None) -> int | None:
    """Start what the plan `nxt` says through the broker: skipped steps recorded, parallel branches as a
    chord joined by `baton.join`, a failure recorded. A single step to run is returned, for the caller to
    execute or queue."""
    if isinstance(nxt, Fail):
        store.runs.end_failed(run_id, CELERY_OWNER, pattern.steps[nxt.step].name)
        return None
    if not isinstance(nxt, RunSteps):
        return None  # done, or waiting for branches in flight whose join asks again
    if nxt.skip:
        try:
            store.steps.mark_skipped(run_id, CELERY_OWNER, [(i, pattern.steps[i].name) for i in nxt.skip])
        except LostOwnership:
            return None  # the run ended (cancelled) meanwhile
    if not (nxt.branches or len(nxt.steps) > 1):
        return nxt.steps[0]
    join = app.signature(JOIN, args=(run_id, fence), queue=QUEUE)
    members = [
        app.signature(
            BRANCH, args=(run_id, i, 1, source_of(pattern, i), fence), queue=QUEUE, **limits_of(pattern.steps[i])
        )
        for i in nxt.steps
    ]
    celery.chord(members)(join)
    return None


def read_states(store: RunStore, run_id: str, idxs: Any = None) -> States:
    """The step states of a run as the store has them now (those of `idxs` only, if given)."""
    rows = store.steps.states(run_id, idxs)
    return States(steps={i: StepView(r.status, 0, r.output_json) for i, r in rows.items()})


# -- the tasks ----------------------------------------------------------------------------------------


def _many_here() -> bool:
    """Whether this task shares its process with many others (Celery's threads pool), rather than running
    alone in a prefork child's (or a solo worker's) main thread."""
    return threading.current_thread() is not threading.main_thread()


def _claiming(store: RunStore, claim: Any) -> StepClaim:
    """Make a claim: on the store's threads when many tasks share this process, else right here."""
    return store_threads(store).submit(claim).result() if _many_here() else claim()  # type: ignore[no-any-return]


class _Requeued(Exception):
    """The step was put back on the queue, with a countdown, as a task of its own."""


def _requeue(
    task: Any, run_id: str, idx: int, this_go: int, source: int | None, countdown: float, fence: int | None
) -> Exception:
    """The exception that brings step `idx` back after `countdown` seconds: Celery's retry of this task (a
    chord's member keeps its id that way), or, from a join, a step task of its own that was just sent."""
    args = (run_id, idx, this_go, source, fence)
    if task.name == JOIN:
        task.app.send_task(STEP, args=args, countdown=countdown, queue=QUEUE, ignore_result=True)
        return _Requeued()
    return task.retry(args=args, countdown=countdown, throw=False)


def _backoff(task: Any) -> float:
    """Seconds before a task that failed around its step tries again: doubling from 2, at most 60."""
    return min(60.0, 2.0 * 2 ** (getattr(task.request, "retries", 0) or 0))


def _step_body(
    task: Any, run_id: str, idx: int, this_go: int = 1, source: int | None = None, fence: int | None = None
) -> None:
    _worker(task).execute(run_id, idx, this_go, source, fence)


def _branch_body(
    task: Any, run_id: str, idx: int, this_go: int = 1, source: int | None = 0, fence: int | None = None
) -> int:
    _worker(task).execute(run_id, idx, this_go, source, fence)
    return idx


def _worker(task: Any) -> _Worker:
    """The task's worker state; a store that cannot be opened now (the database is down) is tried again
    later, never acknowledged as done."""
    try:
        return _Worker(task)
    except Exception:
        log.exception("task %s: cannot reach the store; trying again later", task.name)
        raise task.retry(countdown=_backoff(task), throw=False) from None


def _join_body(task: Any, _results: Any, run_id: str, fence: int | None = None) -> None:
    """After a chord's branches: ask the plan again (end the run failed, or go on with what joins them)."""
    try:
        worker = _Worker(task)
        worker.join(run_id, fence)
    except (celery.exceptions.Retry, _Requeued):
        raise
    except Exception as exc:
        if is_trouble(exc):
            # As in `execute`: never let Celery acknowledge a join that did not happen.
            log.warning("run %s: could not join its branches (%s); trying again later", run_id, _one_line(exc))
            raise task.retry(countdown=_backoff(task), throw=False) from None
        # A bug (in the pattern's plan, say) does not go away by waiting: the run fails with it, visibly.
        log.exception("run %s: could not join its branches", run_id)
        try:
            worker._fail_join(run_id, exc)
        except Exception as again:
            if not is_trouble(again):
                raise
            raise task.retry(countdown=_backoff(task), throw=False) from None


class _Worker:
    """One task's work on one run: the step state machine."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.settings: Settings = task.app.baton_settings
        self.store = worker_store(self.settings)
        self.me = this_owner()
        # "run" goes on with a chain in this task; "step" sends each step as a task of its own.
        self.hop = self.settings.worker.celery_hop
        # What the step being worked on is, once known: for an error around it to be told and counted.
        self._pattern: Any = None
        self._names: tuple[str, ...] = ()
        self._attempt = 0

    def execute(self, run_id: str, idx: int, this_go: int, source: int | None, fence: int | None) -> None:
        """Execute step `idx` of a run, then, on the `run` hop, the steps the plan says come next one by one.

        Each step is claimed, executed and checkpointed on its own, exactly as when it is a task of its own;
        going on in the same task only skips the round trip through the broker. The run goes back to the
        broker for a retry's countdown, parallel branches, or when this worker dies (the message is
        delivered again, and the steps already checkpointed are skipped).
        """
        step_idx: int | None = idx
        while step_idx is not None:
            current = step_idx
            try:
                step_idx, source = self._step(run_id, current, this_go, source, fence)
            except (celery.exceptions.Retry, _Requeued):
                raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self.store.steps.release(run_id, current, self.me)
                if is_trouble(exc):
                    # The database or the broker failed around the step (its own errors are recorded by the
                    # executor): come again later, rather than let Celery acknowledge the message and leave
                    # the run running with nobody to finish it.
                    note_trouble(str(self.store.engine.url))
                    log.warning("run %s, step %d: %s; trying again later", run_id, current, _one_line(exc))
                    raise _requeue(self.task, run_id, current, this_go, source, _backoff(self.task), fence) from None
                # Anything else (a value the database refused, a bug in baton) does not go away by waiting:
                # the step fails with its error kept, after as many tries as its Retry policy allows.
                log.exception("run %s, step %d: could not go on", run_id, current)
                if self._try_again(current, this_go, exc):
                    raise _requeue(
                        self.task, run_id, current, this_go + 1, source, _backoff(self.task), fence
                    ) from None
                try:
                    self._fail_around(run_id, current, exc)
                except Exception as again:
                    if not is_trouble(again):
                        raise
                    raise _requeue(self.task, run_id, current, this_go, source, _backoff(self.task), fence) from None
                return
            this_go = 1

    def _try_again(self, idx: int, this_go: int, exc: Exception) -> bool:
        """Whether an error around step `idx` (not the store's or the broker's trouble) is tried again: as
        the step's Retry policy says, when its pattern is known here; else up to MAX_AROUND times."""
        pattern = self._pattern
        if pattern is not None and 0 <= idx < len(pattern.steps):
            return bool(pattern.steps[idx].retry.should_retry(exc, this_go))
        return this_go < MAX_AROUND

    def _fail_around(self, run_id: str, idx: int, exc: Exception) -> None:
        """Keep the error that kept step `idx` from going on, visible like any step's; the run ends failed
        there (a parallel branch's failure is its join's to judge)."""
        now = utcnow()
        names = self._names
        name = names[idx] if 0 <= idx < len(names) else f"#{idx}"
        error = error_info(exc)
        result = StepResult(idx=idx, name=name, attempt=self._attempt, started_at=now, finished_at=now, error=error)
        with contextlib.suppress(LostOwnership):  # the run ended meanwhile
            self.store.steps.fail_unstarted(run_id, CELERY_OWNER, result, end_run=self.task.name != BRANCH)

    def _fail_join(self, run_id: str, exc: Exception) -> None:
        """End the run failed, with the error that kept its join from planning what follows its branches."""
        run = self.store.runs.get(run_id)
        if run.status.finished:
            return
        done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
        idx = next((i for i, s in enumerate(run.steps) if s.status not in done), len(run.steps) - 1)
        self._names, self._attempt = tuple(s.name for s in run.steps), run.steps[idx].attempts
        self._fail_around(run_id, idx, exc)

    def join(self, run_id: str, fence: int | None) -> None:
        """Plan again after parallel branches: wait for any still in flight, fail, cancel, or go on."""
        store = self.store
        brief = store.runs.brief(run_id)
        if brief is None or brief.status not in (RunStatus.RUNNING, RunStatus.PENDING):
            return
        if fence is not None and brief.claims != fence:
            return  # the run was queued again since this fan-out: the new one has a join of its own
        pattern = find_pattern(brief.pipeline, brief.target)
        try:
            nxt = pattern.plan(read_states(store, run_id))
        except _Stale:
            return  # the join of a fan-out from before the run was retried from an earlier step
        if isinstance(nxt, Wait) or (isinstance(nxt, RunSteps) and nxt.branches):
            # The chord fired before every branch ended (a branch delivered twice counts twice): look again.
            raise self.task.retry(countdown=1.0, throw=False)
        if brief.cancel_requested and not isinstance(nxt, Fail):
            store.runs.end_cancelled(run_id, CELERY_OWNER)
            return
        idx = start(self.task.app, store, pattern, run_id, nxt, fence)
        if idx is None:
            return
        if self.hop == "step" or own_task(self.task, pattern, idx):
            send(self.task.app, pattern, run_id, idx, fence)
            return
        with contextlib.suppress(_Requeued):
            self.execute(run_id, idx, 1, source_of(pattern, idx), fence)

    def _claim(self, run_id: str, idx: int, source: int | None, fence: int | None) -> StepClaim:
        store = self.store
        # Claims keep a connection per thread that makes them: on a threads pool, the store's own few threads.
        claim = _claiming(
            store, functools.partial(store.steps.claim, run_id, idx, self.me, utcnow(), source=source, fence=fence)
        )
        if claim.outcome is ClaimOutcome.BUSY and claim.holder is not None:
            dead = owner_alive(claim.holder) is False
            # A lease that ran out while this process could not reach the store either says nothing of its
            # holder: it is taken over only once the holder had a lease's time to renew it.
            calm = calm_for(str(store.engine.url)) >= store.lease.total_seconds()
            expired = claim.until is not None and claim.until < utcnow() and calm
            if dead or expired:
                take = functools.partial(
                    store.steps.claim, run_id, idx, self.me, utcnow(), take_from=claim.holder, expired=not dead,
                    fence=fence,
                )  # fmt: skip
                claim = _claiming(store, take)
                if claim.outcome is ClaimOutcome.CLAIMED:
                    # The dead worker's calls in flight will never settle: what they held goes back.
                    _claiming(store, functools.partial(store.budgets.release, run_id, idx))
        return claim

    def _step(
        self, run_id: str, idx: int, this_go: int, source: int | None, fence: int | None
    ) -> tuple[int | None, int | None]:
        """One step; returns the step this task goes on with (and its source), if any."""
        store, me = self.store, self.me
        branch = self.task.name == BRANCH  # a parallel branch: its join ends the run, whatever happens
        self._pattern, self._names, self._attempt = None, (), 0
        claim = self._claim(run_id, idx, source, fence)
        outcome = claim.outcome
        self._names, self._attempt = claim.step_names, claim.attempt
        if outcome is ClaimOutcome.GONE or outcome is ClaimOutcome.FAILED:
            return None, None
        if outcome is ClaimOutcome.CANCEL:
            if not branch:
                store.runs.end_cancelled(run_id, CELERY_OWNER)
            return None, None
        if outcome is ClaimOutcome.BUSY:
            # Another live worker holds the step (this message was delivered twice): come back when its lease
            # would have run out; by then it has checkpointed, or it is dead and the step is taken over.
            wait = (claim.until - utcnow()).total_seconds() if claim.until else 1.0
            raise _requeue(self.task, run_id, idx, this_go, source, max(0.5, wait + 0.5), fence)
        if outcome is ClaimOutcome.DONE:
            if branch:
                return None, None
            pattern = find_pattern(claim.pipeline, claim.target)
            # What follows may not have been started before a crash.
            return self._go_on(pattern, run_id, idx, None, fence)
        try:
            pattern, value = self._prepare(claim, run_id, idx)
        except _Stale as exc:
            log.warning("run %s, step %d: a message from before the run was retried, dropped (%s)", run_id, idx, exc)
            store.steps.release(run_id, idx, me)
            return None, None
        except (BatonError, ValidationError, ImportError) as exc:
            # The step cannot start here, and would not anywhere: its code, or its input, is wrong.
            self._fail_before_start(run_id, idx, claim, exc, ends_run=not branch)
            return None, None
        self._pattern = pattern
        step = pattern.steps[idx]
        if step.approval and not store.steps.approved(run_id, idx):
            store.steps.await_approval(run_id, idx, utcnow(), lease_owner=me)
            return None, None
        attempt = Attempt(
            run_id=run_id, step=step, idx=idx, value=value, number=claim.attempt, this_go=this_go,
            owner=CELERY_OWNER, runtime="celery", final=pattern.final(idx), measure=idx in pattern.measured,
            ends_run=not branch, lease_owner=me,
        )  # fmt: skip
        with holding(store, run_id, idx):
            try:
                if _many_here():
                    # On the process's loop, so that hundreds of this worker's threads waiting on model calls
                    # hold no database connection each: the store's writes go through its few threads.
                    result = call_in_background(aexecute(OnLoop(store), attempt))
                else:
                    with store.writer() as writer:  # one task at a time here: this thread's own connection
                        result = execute(store, writer, attempt)
            except LostOwnership:
                # The run ended, or the lease went (taken over; or its claim was lost to a database crash): a
                # new claim tells which, and what to do.
                raise _requeue(self.task, run_id, idx, this_go, source, 0.5, fence) from None
        if isinstance(result, RetryLater):
            if result.cancel_requested:
                if not branch:
                    store.runs.end_cancelled(run_id, CELERY_OWNER)
                return None, None
            raise _requeue(self.task, run_id, idx, this_go + 1, source, result.delay, fence)
        if isinstance(result, Failed) or branch:
            return None, None  # a branch's join goes on
        assert isinstance(result, Succeeded)
        if result.cancel_requested and not pattern.final(idx):
            store.runs.end_cancelled(run_id, CELERY_OWNER)
            return None, None
        return self._go_on(pattern, run_id, idx, result, fence)

    def _prepare(self, claim: StepClaim, run_id: str, idx: int) -> tuple[Any, BaseModel]:
        """The step's pattern, checked against what the run recorded, and the step's validated input."""
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
        reads = pattern.reads(idx)
        read = claim.input_json
        if not reads:
            states = States(input_json=read if read is not None else self.store.runs.input_json(run_id))
        elif len(reads) == 1 and read is not None:
            states = States(steps={reads[0]: StepView(StepStatus.SUCCEEDED, 0, read)})
        else:
            states = read_states(self.store, run_id, list(reads))
        try:
            return pattern, pattern.input_of(idx, states)
        except _Stale as exc:
            raise _Stale(f"run {run_id}: {exc} for step '{pattern.steps[idx].name}'") from None

    def _go_on(
        self, pattern: Any, run_id: str, idx: int, result: Succeeded | None, fence: int | None
    ) -> tuple[int | None, int | None]:
        """Start what follows step `idx`: returned to go on with in this task on the `run` hop."""
        nxt = pattern.follows(idx)
        if nxt is None:
            states = read_states(self.store, run_id)
            if result is not None:
                states.succeeded(idx, result.value, result.result.output_json, 0)
            # What reads this step and is pending waits for it to go on (a retry rewound it, a resume gave it
            # back, or it never started): it is not in flight, whatever its row says.
            for j in range(len(pattern.steps)):
                if idx in pattern.reads(j) and states.status(j) is StepStatus.PENDING:
                    states.prior[j] = states.attempts(j)
                    del states.steps[j]
            nxt = pattern.plan(states)
        follow = start(self.task.app, self.store, pattern, run_id, nxt, fence)
        if follow is None:
            return None, None
        if self.hop == "step" or own_task(self.task, pattern, follow):
            send(self.task.app, pattern, run_id, follow, fence)
            return None, None
        return follow, source_of(pattern, follow)

    def _fail_before_start(self, run_id: str, idx: int, claim: StepClaim, exc: Exception, *, ends_run: bool) -> None:
        now = utcnow()
        name = claim.step_names[idx]
        result = StepResult(
            idx=idx, name=name, attempt=claim.attempt, started_at=now, finished_at=now, error=error_info(exc)
        )
        with contextlib.suppress(LostOwnership):
            self.store.steps.record_failure(
                run_id, CELERY_OWNER, result, retrying=False, end_run=ends_run, lease_owner=self.me
            )
