"""Step leases: what a claim of a celery step finds, and taking a step over from a worker that is gone.

The usual claim is `LeaseClaimer`'s (one round trip, `claims.py`); this is the rarer path, when a worker
found the step held by another that died or whose lease ran out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select, update

from baton.run import ErrorInfo
from baton.status import ClaimOutcome, RunStatus, StepStatus
from baton.store.context import StoreContext
from baton.store.rows import attempt_row, error_columns, names
from baton.store.runs import CELERY_OWNER
from baton.store.schema import attempts, runs, steps

__all__ = ["CELERY_OWNER", "StepClaim", "StepState", "take_over"]

# A step that failed for good stays failed until `reopen` (a resume) makes it pending again: a late copy of
# its message must not run it with a fresh retry budget.
_ENDED = (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value, StepStatus.FAILED.value)


@dataclass(frozen=True, slots=True)
class StepClaim:
    """What claiming a step found.

    `claimed`: this worker holds the step, as attempt `attempt`. `done`: it already succeeded (or was
    skipped). `failed`: it failed for good (a supervisor's worker; the run goes on to its join). `busy`:
    `holder` holds it until `until`. `cancel`: a cancel was asked; nothing may start. `gone`: the run no
    longer runs (it ended, or was never there).
    """

    outcome: ClaimOutcome
    pipeline: str = ""
    target: str | None = None
    step_names: tuple[str, ...] = ()
    attempt: int = 0
    holder: str | None = None
    until: datetime | None = None
    # The input the claim read on the way (the run's, or the source step's checkpoint), when it did.
    input_json: str | None = None
    # After a take-over: how many of the step's attempts were lost with their worker.
    lost: int = 0


@dataclass(frozen=True, slots=True)
class StepState:
    """A step's row as the celery runtime reads it to plan what comes next."""

    status: StepStatus
    output_json: str | None
    holder: str | None


def take_over(
    c: Connection,
    ctx: StoreContext,
    run_id: str,
    idx: int,
    worker: str,
    now: datetime,
    *,
    take_from: str,
    expired: bool,
    fence: int | None = None,
) -> tuple[StepClaim, bool]:
    """Take step `idx` from `take_from` (dead, or with `expired`, whose lease ran out) inside `c`'s
    transaction, recording the attempt it lost. Returns what was found, and whether that is final (False:
    the step was not taken, and the caller looks at why). With `fence`, only if the run was not queued again
    since the message was sent."""
    live_run = [
        runs.c.id == run_id,
        runs.c.owner == CELERY_OWNER,
        runs.c.status.in_([RunStatus.PENDING, RunStatus.RUNNING]),
    ]
    if fence is not None:
        live_run.append(runs.c.claims == fence)
    row = c.execute(
        update(runs)
        .where(*live_run)
        .values(status=RunStatus.RUNNING, started_at=func.coalesce(runs.c.started_at, now), updated_at=now)
        .returning(runs.c.pipeline, runs.c.target, runs.c.step_names, runs.c.cancel_requested)
    ).first()
    if row is None:
        return StepClaim(ClaimOutcome.GONE), True
    pipeline, target, names_value, cancel = row
    step_names = tuple(names(names_value))
    found = StepClaim(ClaimOutcome.GONE, pipeline, target, step_names)
    if cancel:
        return StepClaim(ClaimOutcome.CANCEL, pipeline, target, step_names), True
    if not 0 <= idx < len(step_names):
        return found, True
    free = steps.c.lease_owner == take_from
    if expired:
        free = and_(free, steps.c.lease_expires_at < now)
    insert = ctx.insert(steps)
    fresh = {
        "run_id": run_id, "idx": idx, "name": step_names[idx], "status": StepStatus.RUNNING, "attempts": 1,
        "tokens_in": 0, "tokens_out": 0, "started_at": now, "lease_owner": worker,
        "lease_expires_at": now + ctx.lease,
    }  # fmt: skip
    retake = {
        "status": StepStatus.RUNNING, "attempts": steps.c.attempts + 1, "started_at": now, "finished_at": None,
        "duration_ms": None, **error_columns(None), "lease_owner": worker, "lease_expires_at": now + ctx.lease,
    }  # fmt: skip
    statement = (
        insert.values(**fresh)
        .on_conflict_do_update(
            index_elements=[steps.c.run_id, steps.c.idx], set_=retake, where=and_(steps.c.status.not_in(_ENDED), free)
        )
        .returning(steps.c.attempts, steps.c.started_at)
    )
    claimed = c.execute(statement).first()
    if claimed is None:
        return found, False
    attempt = int(claimed[0])
    if attempt > 1:
        why = "its lease ran out" if expired else "its process died"
        lost_one = ErrorInfo(
            type="Interrupted",
            message=f"the worker running this step ({take_from}) stopped before the step finished ({why}); "
            "another worker runs it again",
        )
        c.execute(
            attempts.insert(),
            attempt_row(run_id, idx, attempt - 1, lost_one, retried=True, started_at=now, finished_at=now),
        )
    lost = c.execute(
        select(func.count())
        .select_from(attempts)
        .where(attempts.c.run_id == run_id, attempts.c.step_idx == idx, attempts.c.error_type == "Interrupted")
    ).scalar_one()
    return StepClaim(ClaimOutcome.CLAIMED, pipeline, target, step_names, attempt=attempt, lost=int(lost)), True
