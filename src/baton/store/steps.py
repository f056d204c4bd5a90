"""The steps of the store: claims and leases, attempts, failures, skipped steps, approval (`store.steps`).

A celery run is owned by the runtime as a whole (`CELERY_OWNER`); each step it executes is held by one
worker process through a lease on the step's row, renewed by that worker's heartbeat. A message delivered
twice (a redelivery after a worker died, a retry racing its original) finds the step either checkpointed
(nothing to do), leased by a live worker (wait), or leased by a dead one (take it over, and record the lost
attempt). A step's checkpoint is the writer's (`store.writer()`), the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, select, update

from baton._context import LLMCall
from baton.run import rejected_error
from baton.status import ClaimOutcome, RunStatus, StepStatus
from baton.store.claims import LeaseClaimer
from baton.store.context import StoreContext, utcnow
from baton.store.leases import StepClaim, StepState, take_over
from baton.store.rows import StepResult, as_json, attempt_row, live_lease_count, write_step
from baton.store.runs import CELERY_OWNER, Runs
from baton.store.schema import attempts, runs, steps
from baton.store.writer import LostOwnership, recount_step, write_calls

__all__ = ["Steps"]

_DONE = (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value)


class Steps:
    """Steps: who holds one, what its attempts left, and whether a person let it run."""

    def __init__(self, ctx: StoreContext, runs: Runs) -> None:
        self._ctx = ctx
        self._runs = runs

    # -- claims and leases (the celery runtime) ---------------------------------------------------------

    def claimer(self) -> LeaseClaimer:
        """This thread's connection for claiming celery steps (kept, like the writer's)."""
        engine = self._ctx.engine
        return self._ctx.kept("claimer", lambda: LeaseClaimer(engine.raw_connection(), engine.dialect.name))

    def claim(
        self,
        run_id: str,
        idx: int,
        worker: str,
        now: datetime,
        *,
        take_from: str | None = None,
        expired: bool = False,
        source: int | None = None,
        fence: int | None = None,
    ) -> StepClaim:
        """Take step `idx` of a celery run for `worker`, marking the run running.

        Without `take_from`, only a step nobody holds is taken, and the input is read on the way: the run's
        (step 0), or the checkpoint of step `source` (default: the previous step). With it, the step is taken
        from that holder (found dead, or with `expired`, whose lease ran out), and the attempt it lost is
        recorded; the caller reads the input. With `fence` (what the message carries), a run queued again since
        the message was sent is `gone` for it.
        """
        if take_from is None:
            source = idx - 1 if source is None else source
            fast = self.claimer().claim(run_id, idx, worker, now, self._ctx.lease, source, fence)
            if fast is None:
                return StepClaim(ClaimOutcome.GONE)
            names = fast.step_names
            if fast.cancel:
                return StepClaim(ClaimOutcome.CANCEL, fast.pipeline, fast.target, names)
            if fast.attempt is not None:
                return StepClaim(
                    ClaimOutcome.CLAIMED,
                    fast.pipeline,
                    fast.target,
                    names,
                    attempt=fast.attempt,
                    input_json=fast.source_json,
                )
            return self._not_claimed(run_id, idx, StepClaim(ClaimOutcome.GONE, fast.pipeline, fast.target, names))
        with self._ctx.engine.begin() as c:
            found, final = take_over(
                c, self._ctx, run_id, idx, worker, now, take_from=take_from, expired=expired, fence=fence
            )
        return found if final else self._not_claimed(run_id, idx, found)

    def _not_claimed(self, run_id: str, idx: int, found: StepClaim) -> StepClaim:
        """Why a live run's step could not be taken: it is done, or somebody holds it."""
        with self._ctx.engine.connect() as c:
            state = c.execute(
                select(steps.c.status, steps.c.lease_owner, steps.c.lease_expires_at).where(
                    steps.c.run_id == run_id, steps.c.idx == idx
                )
            ).first()
        if state is None:
            return found
        status, holder, until = state
        if status in _DONE:
            return StepClaim(ClaimOutcome.DONE, found.pipeline, found.target, found.step_names)
        if status == StepStatus.FAILED.value:
            return StepClaim(ClaimOutcome.FAILED, found.pipeline, found.target, found.step_names)
        return StepClaim(ClaimOutcome.BUSY, found.pipeline, found.target, found.step_names, holder=holder, until=until)

    def heartbeat(self, worker: str, held: Sequence[tuple[str, int]], now: datetime) -> None:
        """Extend the leases `worker` holds on the steps `held` ((run id, step index) pairs) right now.

        Only those: a lease this process took and then lost track of (an error between claim and
        checkpoint) must run out, so that another worker can take the step over.
        """
        if not held:
            return
        with self._ctx.engine.begin() as c:
            for run_id, idx in held:
                c.execute(
                    update(steps)
                    .where(steps.c.run_id == run_id, steps.c.idx == idx, steps.c.lease_owner == worker)
                    .values(lease_expires_at=now + self._ctx.lease)
                )

    def checkpointed(self, run_id: str, idx: int, attempt: int) -> bool:
        """Whether attempt `attempt` of step `idx` is the step's checkpoint (a write whose connection broke
        may have committed all the same: it is not to be done again)."""
        with self._ctx.engine.connect() as c:
            found = c.execute(
                select(steps.c.idx).where(
                    steps.c.run_id == run_id,
                    steps.c.idx == idx,
                    steps.c.status == StepStatus.SUCCEEDED,
                    steps.c.attempts == attempt,
                )
            ).first()
        return found is not None

    def release(self, run_id: str, idx: int, worker: str, *, conn: Connection | None = None) -> bool:
        """Give up the lease `worker` holds on a step it could not finish (the step is pending again);
        False when it did not hold it."""
        with self._ctx.begin(conn) as c:
            return bool(
                c.execute(
                    update(steps)
                    .where(steps.c.run_id == run_id, steps.c.idx == idx, steps.c.lease_owner == worker)
                    .values(lease_owner=None, lease_expires_at=None, status=StepStatus.PENDING)
                ).rowcount
            )

    def states(self, run_id: str, idxs: Sequence[int] | None = None) -> dict[int, StepState]:
        """The rows of a run's steps (all, or those in `idxs`); a step with no row has not started."""
        query = select(steps.c.idx, steps.c.status, steps.c.output, steps.c.lease_owner).where(steps.c.run_id == run_id)
        if idxs is not None:
            query = query.where(steps.c.idx.in_(list(idxs)))
        with self._ctx.engine.connect() as c:
            rows = c.execute(query).all()
        return {idx: StepState(StepStatus(status), as_json(output), holder) for idx, status, output, holder in rows}

    def live_leases(self, run_id: str, now: datetime, *, conn: Connection | None = None) -> int:
        """How many steps of the run a worker holds right now (read on `conn`, inside its transaction)."""
        with self._ctx.read(conn) as c:
            return live_lease_count(c, run_id, now)

    # -- attempts ---------------------------------------------------------------------------------------

    def start_attempt(self, run_id: str, owner: str, idx: int, attempt: int, *, conn: Connection | None = None) -> bool:
        """Record that attempt `attempt` of step `idx` starts now (after a retry's wait).

        Returns whether a cancel was requested (then the attempt must not start). Raises `LostOwnership`
        when `owner` lost the run.
        """
        current = {"current_step": idx, "current_attempt": attempt, "current_started_at": utcnow()}
        with self._ctx.begin(conn) as c:
            return self._runs.hold(run_id, owner, conn=c, also=current)

    def record_calls(
        self, run_id: str, idx: int, attempt: int, calls: Sequence[LLMCall], *, conn: Connection | None = None
    ) -> None:
        """Keep model calls the moment they are made: they were paid for, whatever happens to the attempt."""
        with self._ctx.begin(conn) as c:
            cursor = c.connection.cursor()
            try:
                write_calls(cursor, self._ctx.dialect, run_id, idx, attempt, calls)
            finally:
                cursor.close()

    def add_attempt(self, run_id: str, result: StepResult, *, retried: bool, conn: Connection | None = None) -> None:
        """Keep a failed attempt in the step's history."""
        assert result.error is not None
        row = attempt_row(
            run_id, result.idx, result.attempt, result.error, retried=retried,
            started_at=result.started_at, finished_at=result.finished_at,
        )  # fmt: skip
        with self._ctx.begin(conn) as c:
            c.execute(attempts.insert(), row)

    def write(self, run_id: str, result: StepResult, status: StepStatus, *, conn: Connection | None = None) -> None:
        """Write the step's row as `result` left it, in `status` (a succeeded step is never overwritten)."""
        with self._ctx.begin(conn) as c:
            write_step(c, run_id, result, status)

    def recount(self, run_id: str, idx: int, *, conn: Connection | None = None) -> None:
        """Set the step row's totals from its recorded model calls (after the row was written)."""
        with self._ctx.begin(conn) as c:
            cursor = c.connection.cursor()
            try:
                recount_step(cursor, self._ctx.dialect, run_id, idx)
            finally:
                cursor.close()

    def record_failure(
        self,
        run_id: str,
        owner: str,
        result: StepResult,
        *,
        retrying: bool,
        recount: bool = False,
        end_run: bool = True,
        lease_owner: str | None = None,
        wake_at: datetime | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Keep a failed attempt; unless another attempt follows, the step and the run end failed.

        `wake_at`: when the next attempt is due (a celery run's retry countdown), so that the sweeper does not
        take the run's quiet until then for a lost message.

        Returns whether a cancel was requested; when one was and no attempt follows, the run ends cancelled
        (the step keeps its error). Raises `LostOwnership`, writing nothing, when `owner` lost the run (or
        `lease_owner`, given, no longer holds the step's lease; the lease ends here either way). One
        transaction over `hold`, `release`, `add_attempt`, `write` and `recount`.
        """
        ending = not retrying and end_run
        with self._ctx.begin(conn) as c:
            # The latest countdown of the run's steps (parallel branches may each wait out their own).
            also = None
            if wake_at is not None:
                also = {"wake_at": case((runs.c.wake_at > wake_at, runs.c.wake_at), else_=wake_at)}
            cancel = self._runs.hold(run_id, owner, conn=c, fail_at=result.name if ending else None, also=also)
            # Pending again until the retry claims it; a failure for good is written just below.
            if lease_owner is not None and not self.release(run_id, result.idx, lease_owner, conn=c):
                raise LostOwnership(run_id)
            self.add_attempt(run_id, result, retried=retrying, conn=c)
            if not retrying:
                self.write(run_id, result, StepStatus.FAILED, conn=c)
                if recount:
                    self.recount(run_id, result.idx, conn=c)
            return cancel

    def fail_unstarted(self, run_id: str, owner: str, result: StepResult, *, end_run: bool = True) -> None:
        """Keep the error that kept step `result.idx` from running (or from going on after it), ending the
        run failed there (`end_run`), whether it had started or was still pending. The step keeps a
        checkpoint it already had; the error is kept among its attempts either way."""
        with self._ctx.begin(None) as c:
            self._runs.hold(run_id, owner, conn=c, fail_at=result.name if end_run else None, pending_ok=True)
            self.add_attempt(run_id, result, retried=False, conn=c)
            self.write(run_id, result, StepStatus.FAILED, conn=c)

    def mark_skipped(
        self, run_id: str, owner: str, skipped: Sequence[tuple[int, str]], *, conn: Connection | None = None
    ) -> None:
        """Record steps that will not run in this run (workers the router did not choose)."""
        now = utcnow()
        with self._ctx.begin(conn) as c:
            self._runs.hold(run_id, owner, conn=c, renew=False, pending_ok=True)
            for idx, name in skipped:
                result = StepResult(idx=idx, name=name, attempt=0, started_at=now, finished_at=now)
                write_step(c, run_id, result, StepStatus.SKIPPED)

    # -- approval ---------------------------------------------------------------------------------------

    def await_approval(
        self, run_id: str, idx: int, now: datetime, *, lease_owner: str | None = None, conn: Connection | None = None
    ) -> bool:
        """Stop a running run before step `idx` until a person decides; False if it was not running.

        With `lease_owner` (celery), the step's lease is given back in the same transaction.
        """
        with self._ctx.begin(conn) as c:
            stopped = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING)
                .values(
                    status=RunStatus.AWAITING_APPROVAL,
                    current_step=idx,
                    owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            ).rowcount
            if stopped and lease_owner is not None:
                c.execute(
                    update(steps)
                    .where(steps.c.run_id == run_id, steps.c.idx == idx, steps.c.lease_owner == lease_owner)
                    # The claim counted an attempt that the step did not make.
                    .values(
                        lease_owner=None,
                        lease_expires_at=None,
                        status=StepStatus.PENDING,
                        attempts=case((steps.c.attempts > 0, steps.c.attempts - 1), else_=0),
                    )
                )
            return bool(stopped)

    def approved(self, run_id: str, idx: int) -> bool:
        """Whether a person approved step `idx` of the run (or a later one)."""
        with self._ctx.engine.connect() as c:
            approved = c.execute(select(runs.c.approved_step).where(runs.c.id == run_id)).scalar_one_or_none()
        return approved is not None and approved >= idx

    def decide(
        self, run_id: str, *, approve: bool, now: datetime, runtime: str, owner: str = CELERY_OWNER, why: str = ""
    ) -> int:
        """A person's decision on a run awaiting approval; returns the step it was waiting before (-1: none).

        Approved, the run is pending again (for `owner`, or celery's workers) with that step approved;
        rejected, it ends cancelled, and the step's history says who stopped it and why.
        """
        with self._ctx.engine.begin() as c:
            row = c.execute(
                select(runs.c.current_step, runs.c.step_names)
                .where(runs.c.id == run_id, runs.c.status == RunStatus.AWAITING_APPROVAL)
                .with_for_update()
            ).first()
            if row is None:
                return -1
            idx = int(row[0])
            if approve:
                values: dict[str, Any] = {
                    "status": RunStatus.PENDING, "approved_step": idx, "owner": owner, "runtime": runtime,
                    "lease_expires_at": None if owner == CELERY_OWNER else now + self._ctx.lease,
                    "claims": runs.c.claims + 1, "current_step": None,
                }  # fmt: skip
            else:
                values = {"status": RunStatus.CANCELLED, "finished_at": now, "current_step": None}
            # Conditional: of two people deciding at once (SQLite has no row lock for the read above), one wins.
            decided = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == RunStatus.AWAITING_APPROVAL)
                .values(updated_at=now, **values)
            ).rowcount
            if not decided:
                return -1
            if not approve:
                error = rejected_error(why)
                c.execute(
                    attempts.insert(),
                    attempt_row(run_id, idx, 0, error, retried=False, started_at=now, finished_at=now),
                )
            return idx
