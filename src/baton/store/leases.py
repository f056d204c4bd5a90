"""Step leases: how workers of the celery runtime take a step of a run, one worker at a time.

A celery run is owned by the runtime as a whole (`CELERY_OWNER`); each step it executes is held by one
worker process through a lease on the step's row, renewed by that worker's heartbeat. A message delivered
twice (a redelivery after a worker died, a retry racing its original) finds the step either checkpointed
(nothing to do), leased by a live worker (wait), or leased by a dead one (take it over, and record the lost
attempt).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, and_, case, func, null, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from baton.status import RunStatus, StepStatus
from baton.store.claims import LeaseClaimer
from baton.store.schema import attempts, runs, steps

__all__ = ["CELERY_OWNER", "RunBrief", "StepClaim", "StepLeases", "StepState"]

# The owner of a run whose steps the celery runtime executes: the runtime as a whole, not one process.
CELERY_OWNER = "celery"

_DONE = (StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value)
# A step that failed for good stays failed until `reopen` (a resume) makes it pending again: a late copy of
# its message must not run it with a fresh retry budget.
_ENDED = (*_DONE, StepStatus.FAILED.value)


@dataclass(frozen=True, slots=True)
class StepClaim:
    """What claiming a step found.

    `claimed`: this worker holds the step, as attempt `attempt`. `done`: it already succeeded (or was
    skipped). `failed`: it failed for good (a supervisor's worker; the run goes on to its join). `busy`:
    `holder` holds it until `until`. `cancel`: a cancel was asked; nothing may start. `gone`: the run no
    longer runs (it ended, or was never there).
    """

    outcome: Literal["claimed", "done", "failed", "busy", "cancel", "gone"]
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
class RunBrief:
    """A run's status and what finds its pattern, without its steps."""

    status: RunStatus
    cancel_requested: bool
    pipeline: str
    target: str | None


@dataclass(frozen=True, slots=True)
class StepState:
    """A step's row as the celery runtime reads it to plan what comes next."""

    status: StepStatus
    output_json: str | None
    holder: str | None


class StepLeases:
    """The lease operations of the run store (mixed into `RunStore`)."""

    engine: Engine
    lease: Any
    _kept: Any  # RunStore._kept: a connection kept per thread

    def claimer(self) -> LeaseClaimer:
        """This thread's connection for claiming celery steps (kept, like the writer's)."""
        return self._kept("claimer", lambda: LeaseClaimer(self.engine.raw_connection(), self.engine.dialect.name))

    def claim_step(
        self,
        run_id: str,
        idx: int,
        worker: str,
        now: datetime,
        *,
        take_from: str | None = None,
        expired: bool = False,
        source: int | None = None,
    ) -> StepClaim:
        """Take step `idx` of a celery run for `worker`, marking the run running.

        Without `take_from`, only a step nobody holds is taken, and the input is read on the way: the run's
        (step 0), or the checkpoint of step `source` (default: the previous step). With it, the step is taken
        from that holder (found dead, or with `expired`, whose lease ran out), and the attempt it lost is
        recorded; the caller reads the input.
        """
        if take_from is None:
            source = idx - 1 if source is None else source
            fast = self.claimer().claim(run_id, idx, worker, now, self.lease, source)
            if fast is None:
                return StepClaim("gone")
            names = fast.step_names
            if fast.cancel:
                return StepClaim("cancel", fast.pipeline, fast.target, names)
            if fast.attempt is not None:
                return StepClaim(
                    "claimed", fast.pipeline, fast.target, names, attempt=fast.attempt, input_json=fast.source_json
                )
            return self._not_claimed(run_id, idx, StepClaim("gone", fast.pipeline, fast.target, names))
        with self.engine.begin() as c:
            row = c.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.owner == CELERY_OWNER,
                    runs.c.status.in_([RunStatus.PENDING, RunStatus.RUNNING]),
                )
                .values(status=RunStatus.RUNNING, started_at=func.coalesce(runs.c.started_at, now), updated_at=now)
                .returning(runs.c.pipeline, runs.c.target, runs.c.step_names, runs.c.cancel_requested)
            ).first()
            if row is None:
                return StepClaim("gone")
            pipeline, target, names_value, cancel = row
            names = tuple(json.loads(names_value) if isinstance(names_value, str) else names_value)
            found = StepClaim("gone", pipeline, target, names)
            if cancel:
                return StepClaim("cancel", pipeline, target, names)
            if not 0 <= idx < len(names):
                return found
            if take_from is None:
                free = steps.c.lease_owner.is_(None)
            else:
                free = steps.c.lease_owner == take_from
                if expired:
                    free = and_(free, steps.c.lease_expires_at < now)
            insert = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(steps)
            fresh = {
                "run_id": run_id, "idx": idx, "name": names[idx], "status": StepStatus.RUNNING, "attempts": 1,
                "tokens_in": 0, "tokens_out": 0, "started_at": now, "lease_owner": worker,
                "lease_expires_at": now + self.lease,
            }  # fmt: skip
            statement = (
                insert.values(**fresh)
                .on_conflict_do_update(
                    index_elements=[steps.c.run_id, steps.c.idx],
                    set_={
                        "status": StepStatus.RUNNING,
                        "attempts": steps.c.attempts + 1,
                        "started_at": now,
                        "finished_at": None,
                        "duration_ms": None,
                        "error_type": None,
                        "error_message": None,
                        "error_traceback": None,
                        "error_raw": None,
                        "error_details": None,
                        "lease_owner": worker,
                        "lease_expires_at": now + self.lease,
                    },
                    where=and_(steps.c.status.not_in(_ENDED), free),
                )
                .returning(steps.c.attempts, steps.c.started_at)
            )
            claimed = c.execute(statement).first()
            if claimed is not None:
                attempt = int(claimed[0])
                if take_from is not None and attempt > 1:
                    why = "its lease ran out" if expired else "its process died"
                    c.execute(
                        attempts.insert(),
                        {
                            "run_id": run_id, "step_idx": idx, "attempt": attempt - 1, "error_type": "Interrupted",
                            "error_message": f"the worker running this step ({take_from}) stopped before the step "
                            f"finished ({why}); another worker runs it again",
                            "error_traceback": None, "retried": True, "started_at": now, "finished_at": now,
                        },
                    )  # fmt: skip
                lost = c.execute(
                    select(func.count())
                    .select_from(attempts)
                    .where(
                        attempts.c.run_id == run_id, attempts.c.step_idx == idx, attempts.c.error_type == "Interrupted"
                    )
                ).scalar_one()
                return StepClaim("claimed", pipeline, target, names, attempt=attempt, lost=int(lost))
        return self._not_claimed(run_id, idx, found)

    def _not_claimed(self, run_id: str, idx: int, found: StepClaim) -> StepClaim:
        """Why a live run's step could not be taken: it is done, or somebody holds it."""
        with self.engine.connect() as c:
            state = c.execute(
                select(steps.c.status, steps.c.lease_owner, steps.c.lease_expires_at).where(
                    steps.c.run_id == run_id, steps.c.idx == idx
                )
            ).first()
        if state is None:
            return found
        status, holder, until = state
        if status in _DONE:
            return StepClaim("done", found.pipeline, found.target, found.step_names)
        if status == StepStatus.FAILED.value:
            return StepClaim("failed", found.pipeline, found.target, found.step_names)
        return StepClaim("busy", found.pipeline, found.target, found.step_names, holder=holder, until=until)

    def heartbeat_steps(self, worker: str, held: Sequence[tuple[str, int]], now: datetime) -> None:
        """Extend the leases `worker` holds on the steps `held` ((run id, step index) pairs) right now.

        Only those: a lease this process took and then lost track of (an error between claim and
        checkpoint) must run out, so that another worker can take the step over.
        """
        if not held:
            return
        with self.engine.begin() as c:
            for run_id, idx in held:
                c.execute(
                    update(steps)
                    .where(steps.c.run_id == run_id, steps.c.idx == idx, steps.c.lease_owner == worker)
                    .values(lease_expires_at=now + self.lease)
                )

    def release_step(self, run_id: str, idx: int, worker: str) -> None:
        """Give up the lease `worker` holds on a step it could not finish (the step is pending again)."""
        with self.engine.begin() as c:
            c.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.idx == idx, steps.c.lease_owner == worker)
                .values(lease_owner=None, lease_expires_at=None, status=StepStatus.PENDING)
            )

    def step_states(self, run_id: str, idxs: Sequence[int] | None = None) -> dict[int, StepState]:
        """The rows of a run's steps (all, or those in `idxs`); a step with no row has not started."""
        query = select(steps.c.idx, steps.c.status, steps.c.output, steps.c.lease_owner).where(steps.c.run_id == run_id)
        if idxs is not None:
            query = query.where(steps.c.idx.in_(list(idxs)))
        with self.engine.connect() as c:
            rows = c.execute(query).all()
        return {idx: StepState(StepStatus(status), _as_json(output), holder) for idx, status, output, holder in rows}

    def run_brief(self, run_id: str) -> RunBrief | None:
        """The run's status, cancel flag, pipeline and target; None if there is no such run."""
        with self.engine.connect() as c:
            columns = (runs.c.status, runs.c.cancel_requested, runs.c.pipeline, runs.c.target)
            row = c.execute(select(*columns).where(runs.c.id == run_id)).first()
        return None if row is None else RunBrief(RunStatus(row[0]), bool(row[1]), row[2], row[3])

    def run_input_json(self, run_id: str) -> str:
        """The run's input, as the JSON it was recorded as."""
        with self.engine.connect() as c:
            value = c.execute(select(runs.c.input).where(runs.c.id == run_id)).scalar_one()
        result = _as_json(value)
        assert result is not None
        return result

    def reopen(
        self,
        run_id: str,
        *,
        claims: int,
        runtime: str,
        now: datetime,
        owner: str = CELERY_OWNER,
        rewind: Sequence[int] = (),
    ) -> bool:
        """Make a failed or interrupted run pending again for `runtime`'s workers (its failed steps too);
        False if it changed since it was read (`claims`) or is not resumable.

        With `rewind` (step indexes, the chosen one first), the run may also have succeeded or been
        cancelled: those steps' checkpoints are discarded, in the same transaction, so that they run again.
        The chosen step's history keeps a `Rewound` entry saying so.
        """
        allowed = [RunStatus.FAILED, RunStatus.INTERRUPTED]
        if rewind:
            allowed += [RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.AWAITING_APPROVAL]
        with self.engine.begin() as c:
            reopened = (
                c.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.claims == claims, runs.c.status.in_(allowed))
                    .values(
                        status=RunStatus.PENDING,
                        owner=owner,
                        runtime=runtime,
                        lease_expires_at=None if owner == CELERY_OWNER else now + self.lease,
                        current_step=None,
                        failed_step=None,
                        output=null(),  # SQL NULL, not JSON null: no checkpoint
                        finished_at=None,
                        cancel_requested=False,
                        claims=runs.c.claims + 1,
                        updated_at=now,
                    )
                ).rowcount
                == 1
            )
            if not reopened:
                return False
            c.execute(
                update(steps)
                .where(
                    steps.c.run_id == run_id,
                    steps.c.status.in_([StepStatus.FAILED, StepStatus.INTERRUPTED, StepStatus.CANCELLED]),
                )
                .values(status=StepStatus.PENDING, lease_owner=None, lease_expires_at=None)
            )
            if rewind:
                # An approval given for a step that runs again is asked again.
                c.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.approved_step >= min(rewind))
                    .values(approved_step=null())
                )
                # Each step that ran and runs again keeps a `Rewound` entry: its history, and the generation
                # of its side effects' keys (asked again, they are done again).
                ran = c.execute(
                    select(steps.c.idx, steps.c.name, steps.c.attempts, steps.c.started_at, steps.c.finished_at).where(
                        steps.c.run_id == run_id, steps.c.idx.in_(list(rewind))
                    )
                ).all()
                names = {idx: name for idx, name, *_ in ran}
                first = names.get(rewind[0], f"#{rewind[0]}")
                for idx, _name, count, started, finished in ran:
                    why = "this step" if idx == rewind[0] else f"step '{first}'"
                    c.execute(
                        attempts.insert(),
                        {
                            "run_id": run_id, "step_idx": idx, "attempt": count, "error_type": "Rewound",
                            "error_message": f"checkpoint discarded: the run was retried from {why}",
                            "error_traceback": None, "retried": True, "started_at": started or now,
                            "finished_at": finished or now,
                        },
                    )  # fmt: skip
                # The rows stay, with their attempt counts, so the next attempts are numbered after them.
                c.execute(
                    update(steps)
                    .where(steps.c.run_id == run_id, steps.c.idx.in_(list(rewind)))
                    .values(
                        status=StepStatus.PENDING,
                        output=null(),  # SQL NULL, not JSON null: no checkpoint
                        error_type=None,
                        error_message=None,
                        error_traceback=None,
                        error_raw=None,
                        error_details=None,
                        started_at=None,
                        finished_at=None,
                        duration_ms=None,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
            return True

    def await_approval(self, run_id: str, idx: int, now: datetime, *, lease_owner: str | None = None) -> bool:
        """Stop a running run before step `idx` until a person decides; False if it was not running.

        With `lease_owner` (celery), the step's lease is given back in the same transaction.
        """
        with self.engine.begin() as c:
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

    def step_approved(self, run_id: str, idx: int) -> bool:
        """Whether a person approved step `idx` of the run (or a later one)."""
        with self.engine.connect() as c:
            approved = c.execute(select(runs.c.approved_step).where(runs.c.id == run_id)).scalar_one_or_none()
        return approved is not None and approved >= idx

    def decide(
        self, run_id: str, *, approve: bool, now: datetime, runtime: str, owner: str = CELERY_OWNER, why: str = ""
    ) -> int:
        """A person's decision on a run awaiting approval; returns the step it was waiting before.

        Approved, the run is pending again (for `owner`, or celery's workers) with that step approved;
        rejected, it ends cancelled, and the step's history says who stopped it and why.
        """
        with self.engine.begin() as c:
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
                    "lease_expires_at": None if owner == CELERY_OWNER else now + self.lease,
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
                c.execute(
                    attempts.insert(),
                    {
                        "run_id": run_id, "step_idx": idx, "attempt": 0, "error_type": "Rejected",
                        "error_message": f"a person rejected the run before this step{': ' + why if why else ''}",
                        "error_traceback": None, "retried": False, "started_at": now, "finished_at": now,
                    },
                )  # fmt: skip
            return idx

    def live_leases(self, run_id: str, now: datetime, *, conn: Connection | None = None) -> int:
        """How many steps of the run a worker holds right now (read on `conn`, inside its transaction)."""
        query = (
            select(func.count())
            .select_from(steps)
            .where(
                steps.c.run_id == run_id,
                steps.c.lease_owner.is_not(None),
                or_(steps.c.lease_expires_at.is_(None), steps.c.lease_expires_at >= now),
            )
        )
        if conn is not None:
            return int(conn.execute(query).scalar_one())
        with self.engine.connect() as c:
            return int(c.execute(query).scalar_one())


def _as_json(value: Any) -> str | None:
    # SQLite hands JSON back as text; PostgreSQL's json type as parsed values.
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)
