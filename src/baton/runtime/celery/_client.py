"""The celery runtime as its callers see it: runs are recorded in the store and their first steps queued;
every call returns at once, and `baton.wait` follows a run through the store (never Celery's results)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from baton.budgets import Budget
from baton.errors import RunNotQueued, RunNotResumable, UserError
from baton.patterns.plan import States, recorded_states, rewind_plan
from baton.run import Run
from baton.runtime.aio import submit_off_loop
from baton.runtime.base import Observer, await_for, wait_for
from baton.runtime.celery._app import celery_app, check_broker, is_broker_trouble, not_sent
from baton.runtime.celery._tasks import send, start
from baton.runtime.records import create_run, read_run, resumable
from baton.settings import Settings
from baton.status import RunStatus, StepStatus
from baton.store import CELERY_OWNER, RunStore, utcnow

__all__ = ["LOST_AFTER", "CeleryRuntime"]

# A delivery's run still pending this long after it was created is taken for lost with its message.
LOST_AFTER = 30.0


class CeleryRuntime:
    """Runs a pattern's steps on Celery workers; every call returns at once, `run` waits on the store."""

    name = "celery"
    executes_here = False

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    @property
    def app(self) -> Any:
        """The Celery app messages are sent through."""
        return celery_app(self.settings)

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
        """Record a pending run and queue what its plan starts with; returns the run id at once.

        A run that handles an event's `delivery` (see `baton.events`) is not created, and None is returned,
        when the event was already handed to that subscriber. A broker that cannot be reached raises
        `BrokerUnavailable` before anything is recorded; one lost between that look and the send raises
        `RunNotQueued`, carrying the id of the run that waits, pending, for `baton resume`.
        """
        self.check_ready(pattern)
        with store.writer() as writer:
            run_id, *_ = create_run(
                writer, store, pattern, value, CELERY_OWNER, pending=True, runtime=self.name,
                correlation_id=correlation_id, trigger_event=trigger_event, delivery=delivery, budget=budget,
            )  # fmt: skip
        if run_id is None:
            if delivery is not None and trigger_event is not None:
                # Handed over before, but perhaps never queued (the broker failed after the commit): a run
                # still pending is queued again, which is safe (a message delivered twice runs once).
                existing, _status, created = store.events.delivery_run(trigger_event, delivery[0])
                stale = created is not None and created < utcnow() - timedelta(seconds=LOST_AFTER)
                brief = store.runs.brief(existing) if existing is not None and stale else None
                if existing is not None and brief is not None and brief.status is RunStatus.PENDING:
                    self.requeue(store, pattern, existing, brief.claims)
            return None
        with self._queueing(run_id):
            self._start(store, pattern, run_id, States(), fence=0)  # a new run's fence: it was never claimed
        return run_id

    def run(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        observer: Observer | None = None,
        *,
        budget: Budget | None = None,
    ) -> Run:
        """Submit, then wait on the store until the run stops (never on Celery's results)."""
        run_id = self.submit(store, pattern, value, budget=budget)
        assert run_id is not None
        if observer is not None:
            observer.run_created(run_id)
        return wait_for(store, run_id)

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
        """`submit` for async code: recorded and queued without blocking the caller's loop."""
        where = {
            "correlation_id": correlation_id,
            "trigger_event": trigger_event,
            "delivery": delivery,
            "budget": budget,
        }
        return await submit_off_loop(self, store, pattern, value, **where)

    async def arun(
        self,
        store: RunStore,
        pattern: Any,
        value: BaseModel,
        observer: Observer | None = None,
        *,
        budget: Budget | None = None,
    ) -> Run:
        """`run` for async code: submit, then await the run in the store."""
        run_id = await self.asubmit(store, pattern, value, budget=budget)
        assert run_id is not None
        if observer is not None:
            observer.run_created(run_id)
        return await await_for(store, run_id)

    def resume(self, store: RunStore, pattern: Any, run_id: str, observer: Observer | None = None) -> str:
        """Queue a failed or interrupted run again at what its plan says is unfinished; returns at once.

        A celery run still pending or running that no worker holds (its message was lost with the broker's
        data, say) is queued again as it is: a message delivered twice is safe.
        """
        self.check_ready(pattern)
        run = read_run(store, pattern, run_id)
        if run.runtime == self.name and run.status in (RunStatus.PENDING, RunStatus.RUNNING):
            with self._queueing(run.id):
                self._requeue_stuck(store, pattern, run)
        else:
            run, states = resumable(store, pattern, run.id)
            if not store.runs.reopen(run.id, claims=run.claims, runtime=self.name, now=utcnow()):
                raise RunNotResumable(f"run {run.id} changed while resuming (another process resumed it); look again")
            with self._queueing(run.id):
                self._start(store, pattern, run.id, states, fence=run.claims + 1)
        if observer is not None:
            observer.run_created(run.id)
        return run.id

    def approve(self, store: RunStore, pattern: Any, run_id: str) -> str:
        """Approve a run awaiting approval: the step it waited before is queued again for the workers."""
        self.check_ready(pattern)
        idx = store.steps.decide(run_id, approve=True, now=utcnow(), runtime=self.name)
        if idx < 0:
            raise RunNotResumable(f"run {run_id} is not awaiting approval")
        brief = store.runs.brief(run_id)
        with self._queueing(run_id):
            send(self.app, pattern, run_id, idx, brief.claims if brief is not None else None)
        return run_id

    def retry_from(
        self, store: RunStore, pattern: Any, run_id: str, step: str, observer: Observer | None = None
    ) -> str:
        """Discard the checkpoints of `step` and of what follows it, and queue the run again from there."""
        self.check_ready(pattern)
        run = read_run(store, pattern, run_id)
        rewind = rewind_plan(run, pattern, step)
        if not store.runs.reopen(run.id, claims=run.claims, runtime=self.name, now=utcnow(), rewind=rewind):
            raise RunNotResumable(f"run {run.id} changed while retrying (another process resumed it); look again")
        states = recorded_states(run)
        for idx in rewind:
            states.steps.pop(idx, None)
        with self._queueing(run.id):
            self._start(store, pattern, run.id, states, fence=run.claims + 1)
        if observer is not None:
            observer.run_created(run.id)
        return run.id

    def check_ready(self, pattern: Any) -> None:
        """Refuse, in one line and before anything is recorded, a pattern that workers cannot import, a
        misconfigured broker, or one that cannot be reached (looked at again only every few seconds)."""
        _require_target(pattern)
        check_broker(celery_app(self.settings), recent=True)

    @contextlib.contextmanager
    def _queueing(self, run_id: str) -> Iterator[None]:
        """Around a send after the run was recorded: the broker's refusal becomes `RunNotQueued`, naming it."""
        try:
            yield
        except Exception as exc:
            if not is_broker_trouble(exc):
                raise
            raise RunNotQueued(run_id, not_sent(self.app, exc)) from None

    def requeue(self, store: RunStore, pattern: Any, run_id: str, claims: int) -> bool:
        """Queue a pending or running run that nothing moves again at what is unfinished (a step whose holder
        is gone is taken over), fencing off the messages sent before; False if it moved meanwhile."""
        run = store.runs.get(run_id)
        if run.claims != claims:
            return False
        if [s.name for s in run.steps] != pattern.step_names:
            raise RunNotResumable(f"run {run.id} recorded steps {[s.name for s in run.steps]}; the code has others")
        # Planned before the fence moves: a plan that cannot be made moves nothing, so nothing loops.
        nxt = pattern.plan(recorded_states(run))
        if not store.runs.refence(run_id, claims, utcnow()):
            return False
        idx = start(self.app, store, pattern, run_id, nxt, claims + 1)
        if idx is not None:
            send(self.app, pattern, run_id, idx, claims + 1)
        return True

    def _start(self, store: RunStore, pattern: Any, run_id: str, states: States, *, fence: int) -> None:
        idx = start(self.app, store, pattern, run_id, pattern.plan(states), fence)
        if idx is not None:
            send(self.app, pattern, run_id, idx, fence)

    def _requeue_stuck(self, store: RunStore, pattern: Any, run: Run) -> None:
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
        # What no live worker holds runs again; what is done is not.
        if not self.requeue(store, pattern, run.id, run.claims):
            raise RunNotResumable(f"run {run.id} moved while it was being queued again; look again")


def _require_target(pattern: Any) -> None:
    if not pattern.target:
        raise UserError(
            f"pattern '{pattern.name}' has no importable target, so workers cannot find it: define it at the top "
            "level of a module (or a file run by `baton run path/file.py:name`)"
        )
