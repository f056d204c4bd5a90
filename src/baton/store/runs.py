"""The runs of the store: finding and reading them, who owns one, and how one ends (`store.runs`).

Reading never writes. A run whose owner died stays "running" in the store until somebody calls `reap`: the
CLI, the server and `baton.wait` do before they read, so the next `baton show` sees it interrupted.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, null, or_, select, update

from baton._ids import RUN_ID_LENGTH, check_prefix, is_prefix
from baton._owner import owner_alive
from baton.errors import RunNotFound, UserError
from baton.run import ErrorInfo, Run
from baton.status import RunStatus, StepStatus
from baton.store.browse import RunFilter
from baton.store.budgets import release_holds
from baton.store.context import StoreContext, utcnow
from baton.store.reading import current_step, run_from_rows
from baton.store.rows import StepResult, as_json, attempt_row, ended, error_columns, live_lease_count, names, write_step
from baton.store.schema import attempts, events, llm_calls, runs, steps
from baton.store.trouble import calm_for
from baton.store.writer import LostOwnership

__all__ = ["CELERY_OWNER", "LostRun", "RunBrief", "Runs"]

# The owner of a run whose steps the celery runtime executes: the runtime as a whole, not one process.
CELERY_OWNER = "celery"


@dataclass(frozen=True, slots=True)
class RunBrief:
    """A run's status and what finds its pattern, without its steps."""

    status: RunStatus
    cancel_requested: bool
    pipeline: str
    target: str | None
    claims: int = 0  # the run's fence: a celery message sent for another value of it is stale


@dataclass(frozen=True, slots=True)
class LostRun:
    """A celery run that nothing moves: no worker holds a step of it, and no message is taken to be coming."""

    id: str
    claims: int
    pipeline: str
    target: str | None
    # "lease": a step's holder stopped renewing its lease (its worker died); "quiet": nothing happened for
    # longer than the bound (its message was lost with the broker's data).
    why: str


class Runs:
    """Runs: read them, claim them, end them, and reap those whose owner is gone."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    # -- reading ----------------------------------------------------------------------------------------

    def resolve_id(self, run_id: str) -> str:
        """The full id of the run `run_id` names (a unique prefix of MIN_PREFIX_LENGTH characters is enough)."""
        with self._ctx.engine.connect() as c:
            if c.execute(select(runs.c.id).where(runs.c.id == run_id)).first():
                return run_id
            check_prefix(run_id, "run", RunNotFound)
            if is_prefix(run_id):
                found = c.execute(select(runs.c.id).where(runs.c.id.startswith(run_id)).limit(2)).scalars().all()
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise RunNotFound(f"run id prefix {run_id!r} is ambiguous; give more of the id")
        raise RunNotFound(f"no run with id {run_id!r} in this store")

    def get(self, run_id: str, *, conn: Connection | None = None) -> Run:
        """The run `run_id` (or a unique prefix) with every step, as recorded (see `reap`)."""
        if len(run_id) != RUN_ID_LENGTH:
            run_id = self.resolve_id(run_id)
        with self._ctx.read(conn) as c:
            row = c.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
            if row is None:
                raise RunNotFound(f"no run with id {run_id!r} in this store")
            step_rows = c.execute(select(steps).where(steps.c.run_id == run_id)).mappings().all()
            attempt_rows = (
                c.execute(select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.id)).mappings().all()
            )
            call_rows = (
                c.execute(select(llm_calls).where(llm_calls.c.run_id == run_id).order_by(llm_calls.c.id))
                .mappings()
                .all()
            )
            emitted = c.execute(
                select(events.c.id, events.c.type).where(events.c.source_run == run_id).order_by(events.c.id)
            ).all()
        run = run_from_rows(row, step_rows, attempt_rows, call_rows)
        run.emitted = tuple((i, t) for i, t in emitted)
        return run

    def list(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        limit: int = 50,
        before: str | None = None,
        correlation_id: str | None = None,
        failed_step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[Run]:
        """Runs newest first (without step records), filtered; `before` is a keyset cursor (a run id)."""
        where = RunFilter(status, pipeline, failed_step, since, until, correlation_id)
        query = select(runs).where(*where.conditions()).order_by(runs.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(runs.c.id < before)
        with self._ctx.engine.connect() as c:
            rows = c.execute(query).mappings().all()
        return [run_from_rows(row, None, ()) for row in rows]

    def statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        """The status of each of `run_ids` (full ids) that exists, in one read per 500 of them."""
        out: dict[str, RunStatus] = {}
        ids = builtins.list(run_ids)
        with self._ctx.engine.connect() as c:
            for at in range(0, len(ids), 500):
                query = select(runs.c.id, runs.c.status).where(runs.c.id.in_(ids[at : at + 500]))
                out.update((rid, RunStatus(status)) for rid, status in c.execute(query))
        return out

    def brief(self, run_id: str) -> RunBrief | None:
        """The run's status, cancel flag, pipeline and target; None if there is no such run."""
        with self._ctx.engine.connect() as c:
            columns = (runs.c.status, runs.c.cancel_requested, runs.c.pipeline, runs.c.target, runs.c.claims)
            row = c.execute(select(*columns).where(runs.c.id == run_id)).first()
        return None if row is None else RunBrief(RunStatus(row[0]), bool(row[1]), row[2], row[3], int(row[4] or 0))

    def input_json(self, run_id: str) -> str:
        """The run's input, as the JSON it was recorded as."""
        with self._ctx.engine.connect() as c:
            value = c.execute(select(runs.c.input).where(runs.c.id == run_id)).scalar_one()
        result = as_json(value)
        assert result is not None
        return result

    # -- owning -----------------------------------------------------------------------------------------

    def claim(
        self,
        run_id: str,
        owner: str,
        *,
        start_idx: int,
        attempt: int,
        statuses: Sequence[str],
        claims: int | None = None,
        only_owner: str | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Take a run in one of `statuses` for `owner`, at step `start_idx`; False if it is not as expected.

        `claims` makes the claim conditional on the run not having been claimed since it was read (a resume
        plans from what it read); `only_owner` lets a process take a pending run it submitted itself. An
        explicit claim is a new intent, so an earlier cancel request is forgotten.
        """
        now = utcnow()
        cond = [runs.c.id == run_id, runs.c.status.in_(builtins.list(statuses))]
        if claims is not None:
            cond.append(runs.c.claims == claims)
        if only_owner is not None:
            cond.append(runs.c.owner == only_owner)
        values = {
            "status": RunStatus.RUNNING, "owner": owner, "lease_expires_at": now + self._ctx.lease,
            "current_step": start_idx, "current_attempt": attempt, "current_started_at": now, "failed_step": None,
            "finished_at": None, "cancel_requested": False, "claims": runs.c.claims + 1,
            "started_at": func.coalesce(runs.c.started_at, now), "updated_at": now,
        }  # fmt: skip
        with self._ctx.begin(conn) as c:
            return c.execute(update(runs).where(*cond).values(**values)).rowcount == 1

    def heartbeat(self, owner: str, run_ids: Sequence[str], *, conn: Connection | None = None) -> None:
        """Extend the lease of the runs `owner` is executing."""
        if not run_ids:
            return
        now = utcnow()
        with self._ctx.begin(conn) as c:
            c.execute(
                update(runs)
                .where(runs.c.id.in_(builtins.list(run_ids)), runs.c.owner == owner)
                .values(lease_expires_at=now + self._ctx.lease)
            )

    def hold(
        self,
        run_id: str,
        owner: str,
        *,
        conn: Connection,
        renew: bool = True,
        fail_at: str | None = None,
        pending_ok: bool = False,
        also: dict[str, Any] | None = None,
    ) -> bool:
        """Check, inside the caller's transaction, that `owner` still runs the run; returns whether a cancel
        was requested. Raises `LostOwnership` when it does not (the caller's writes roll back).

        `renew` extends the run's lease; `fail_at` (a step name) ends the run failed there, or cancelled if a
        cancel was requested; `pending_ok` also holds a run that `owner` was given back but has not started
        again (a resumed celery run whose plan is being sent); `also` are more columns of the run to set.
        """
        now = utcnow()
        values: dict[str, Any] = {"updated_at": now}
        if renew:
            values["lease_expires_at"] = now + self._ctx.lease
        if fail_at is not None:
            stopped = case((runs.c.cancel_requested, RunStatus.CANCELLED.value), else_=RunStatus.FAILED.value)
            values |= ended(RunStatus.FAILED, now) | {"status": stopped, "failed_step": fail_at}
        if also:
            values |= also
        row = conn.execute(
            update(runs)
            .where(
                runs.c.id == run_id,
                runs.c.owner == owner,
                runs.c.status.in_([RunStatus.RUNNING, RunStatus.PENDING] if pending_ok else [RunStatus.RUNNING]),
            )
            .values(**values)
            .returning(runs.c.cancel_requested)
        ).first()
        if row is None:
            raise LostOwnership(run_id)
        return bool(row[0])

    # -- ending -----------------------------------------------------------------------------------------

    def end_failed(self, run_id: str, owner: str, failed_step: str, *, conn: Connection | None = None) -> None:
        """End a run failed after its parallel steps finished (or cancelled, if a cancel was asked)."""
        now = utcnow()
        stopped = case((runs.c.cancel_requested, RunStatus.CANCELLED.value), else_=RunStatus.FAILED.value)
        with self._ctx.begin(conn) as c:
            c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING)
                .values(**(ended(RunStatus.FAILED, now) | {"status": stopped, "failed_step": failed_step}))
            )

    def end_cancelled(self, run_id: str, owner: str | None = None, *, conn: Connection | None = None) -> None:
        """End a run cancelled: nothing after its current step will start."""
        now = utcnow()
        cond = [runs.c.id == run_id, runs.c.status == RunStatus.RUNNING]
        if owner is not None:
            cond.append(runs.c.owner == owner)
        with self._ctx.begin(conn) as c:
            c.execute(update(runs).where(*cond).values(**ended(RunStatus.CANCELLED, now)))

    def cancel(self, run_id: str) -> RunStatus:
        """Cancel a run: at once if nothing runs it, else after its current step. Returns the new status."""
        run_id = self.resolve_id(run_id)
        # A run whose owner died is idle: cancelled at once, not left waiting for a step that never ends.
        self.reap(run_id)
        now = utcnow()
        with self._ctx.engine.begin() as c:
            # Lock the run first (as the reaper does), so that a celery worker's claim either committed before
            # (its lease is seen below) or waits and then finds the run cancelled.
            status, owner = c.execute(self._locked(c, run_id, runs.c.status, runs.c.owner)).one()
            idle = status in (RunStatus.PENDING, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.AWAITING_APPROVAL)
            if status == RunStatus.RUNNING and owner == CELERY_OWNER:
                # A celery run that no worker is executing right now is idle too: its queued messages will
                # find it cancelled and do nothing.
                idle = live_lease_count(c, run_id, now) == 0
            if idle:
                c.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(**(ended(RunStatus.CANCELLED, now) | {"cancel_requested": True}))
                )
                return RunStatus.CANCELLED
            if status == RunStatus.RUNNING:
                c.execute(update(runs).where(runs.c.id == run_id).values(cancel_requested=True, updated_at=now))
                return RunStatus.RUNNING
        raise UserError(f"run {run_id} is already {status}; there is nothing to cancel")

    def _locked(self, c: Connection, run_id: str, *columns: Any) -> Any:
        """A SELECT of the run that holds it until the transaction ends, so that its owner cannot write in
        between: a write first on SQLite (it takes the database's write lock), FOR UPDATE on PostgreSQL."""
        query = select(*columns).where(runs.c.id == run_id)
        if self._ctx.dialect == "postgresql":
            return query.with_for_update()
        c.execute(update(runs).where(runs.c.id == run_id).values(updated_at=runs.c.updated_at))
        return query

    def reopen(
        self,
        run_id: str,
        *,
        claims: int,
        runtime: str,
        now: datetime,
        owner: str = CELERY_OWNER,
        rewind: Sequence[int] = (),
        conn: Connection | None = None,
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
        values = {
            "status": RunStatus.PENDING, "owner": owner, "runtime": runtime,
            "lease_expires_at": None if owner == CELERY_OWNER else now + self._ctx.lease, "current_step": None,
            "failed_step": None, "output": null(),  # SQL NULL, not JSON null: no checkpoint
            "finished_at": None, "cancel_requested": False, "claims": runs.c.claims + 1, "updated_at": now,
            "resumed_at": now,
        }  # fmt: skip
        with self._ctx.begin(conn) as c:
            where = (runs.c.id == run_id, runs.c.claims == claims, runs.c.status.in_(allowed))
            if c.execute(update(runs).where(*where).values(**values)).rowcount != 1:
                return False
            c.execute(
                update(steps)
                .where(
                    steps.c.run_id == run_id,
                    steps.c.status.in_([StepStatus.FAILED, StepStatus.INTERRUPTED, StepStatus.CANCELLED]),
                )
                .values(status=StepStatus.PENDING, lease_owner=None, lease_expires_at=None)
            )
            # No call of it is in flight now: what its calls held against its budget (a process that died
            # mid-call never settled) is given back, or it would hold that worst case for ever.
            release_holds(c, run_id)
            if rewind:
                self._rewind(c, run_id, rewind, now)
            return True

    def _rewind(self, c: Connection, run_id: str, rewind: Sequence[int], now: datetime) -> None:
        # An approval given for a step that runs again is asked again.
        c.execute(
            update(runs).where(runs.c.id == run_id, runs.c.approved_step >= min(rewind)).values(approved_step=null())
        )
        # Each step that ran and runs again keeps a `Rewound` entry: its history, and the generation of its
        # side effects' keys (asked again, they are done again).
        ran = c.execute(
            select(steps.c.idx, steps.c.name, steps.c.attempts, steps.c.started_at, steps.c.finished_at).where(
                steps.c.run_id == run_id, steps.c.idx.in_(builtins.list(rewind))
            )
        ).all()
        found = {idx: name for idx, name, *_ in ran}
        first = found.get(rewind[0], f"#{rewind[0]}")
        for idx, _name, count, started, finished in ran:
            why = "this step" if idx == rewind[0] else f"step '{first}'"
            error = ErrorInfo(type="Rewound", message=f"checkpoint discarded: the run was retried from {why}")
            row = attempt_row(
                run_id, idx, count, error, retried=True, started_at=started or now, finished_at=finished or now
            )
            c.execute(attempts.insert(), row)
        # The rows stay, with their attempt counts, so the next attempts are numbered after them.
        c.execute(
            update(steps)
            .where(steps.c.run_id == run_id, steps.c.idx.in_(builtins.list(rewind)))
            .values(
                status=StepStatus.PENDING,
                output=null(),  # SQL NULL, not JSON null: no checkpoint
                **error_columns(None),
                started_at=None,
                finished_at=None,
                duration_ms=None,
                lease_owner=None,
                lease_expires_at=None,
            )
        )

    # -- lost celery work -------------------------------------------------------------------------------

    def lost(
        self,
        now: datetime,
        *,
        quiet: timedelta | None,
        reset_at: datetime | None = None,
        limit: int = 500,
        ids: Sequence[str] | None = None,
    ) -> builtins.list[LostRun]:
        """Celery runs (pending or running) that nothing moves: no step has a live lease, and either a step's
        lease ran out (its holder is gone), or, with `quiet`, nothing happened to the run for that long
        (created, claimed, a step started or ended, a retry's countdown due), or, with `reset_at` (when the
        broker lost its messages), nothing happened to it since then. `ids`: among those runs only."""
        live = (
            select(steps.c.idx)
            .where(steps.c.run_id == runs.c.id, steps.c.lease_owner.is_not(None), steps.c.lease_expires_at >= now)
            .exists()
        )
        expired = (
            select(steps.c.idx)
            .where(steps.c.run_id == runs.c.id, steps.c.lease_owner.is_not(None), steps.c.lease_expires_at < now)
            .exists()
        )
        why: Any = case((expired, "lease"), else_="quiet")
        gone: Any = expired
        last_step = (
            select(func.max(func.coalesce(steps.c.finished_at, steps.c.started_at)))
            .where(steps.c.run_id == runs.c.id)
            .scalar_subquery()
        )

        def still_since(since: datetime) -> Any:
            return and_(
                runs.c.updated_at < since,
                or_(runs.c.wake_at.is_(None), runs.c.wake_at < since),
                or_(last_step.is_(None), last_step < since),
            )

        if quiet is not None:
            gone = or_(gone, still_since(now - quiet))
        if reset_at is not None:
            gone = or_(gone, still_since(reset_at))
        query = (
            select(runs.c.id, runs.c.claims, runs.c.pipeline, runs.c.target, why)
            .where(
                runs.c.status.in_([RunStatus.PENDING, RunStatus.RUNNING]),
                runs.c.status != RunStatus.SUCCEEDED,  # implied; said for SQLite's planner (the partial index)
                runs.c.owner == CELERY_OWNER,
                ~live,
                gone,
            )
            .order_by(runs.c.id)
            .limit(limit)
        )
        if ids is not None:
            query = query.where(runs.c.id.in_(builtins.list(ids)))
        with self._ctx.engine.connect() as c:
            return [LostRun(r[0], int(r[1] or 0), r[2], r[3], r[4]) for r in c.execute(query)]

    def refence(self, run_id: str, claims: int, now: datetime) -> bool:
        """Take a lost celery run back to queue it again: its fence moves on (the messages sent before are
        stale from now on), provided nothing changed since it was found lost. False: it moved meanwhile."""
        with self._ctx.engine.begin() as c:
            # Locked first: a claim holds the run's row until it commits its lease, so the leases read next
            # (a statement of its own, with a snapshot taken after the lock) include any claim made meanwhile.
            found = c.execute(self._locked(c, run_id, runs)).mappings().first()
            if (
                found is None
                or found["claims"] != claims
                or found["owner"] != CELERY_OWNER
                or found["status"] not in (RunStatus.PENDING, RunStatus.RUNNING)
                or live_lease_count(c, run_id, now)
            ):
                return False
            c.execute(update(runs).where(runs.c.id == run_id).values(claims=claims + 1, updated_at=now, wake_at=None))
        return True

    # -- reaping ----------------------------------------------------------------------------------------

    def reap(self, run_id: str | None = None) -> builtins.list[str]:
        """Mark runs whose owner died or whose lease ran out interrupted (resumable); returns their ids.

        An owner on this machine is dead when its process is; any owner is dead when it stopped renewing its
        lease (a heartbeat renews it while a run executes or waits to start). Readers call this before they
        read (the CLI, the server, `baton.wait`): reading itself never writes. `run_id` may be a prefix.
        """
        if run_id is not None:
            run_id = self.resolve_id(run_id)
        if calm_for(str(self._ctx.engine.url)) < self._ctx.lease.total_seconds():
            # This process just met the store's trouble: leases ran out for everyone while it was down,
            # their owners alive. They have a lease's time to renew them before anyone is called gone.
            return []
        now = utcnow()
        # A celery run belongs to the broker, which redelivers the message of a step whose worker died; its
        # steps' leases say who executes them.
        query = select(runs.c.id, runs.c.owner, runs.c.lease_expires_at).where(
            runs.c.status.in_([RunStatus.RUNNING, RunStatus.PENDING]),
            runs.c.status != RunStatus.SUCCEEDED,  # implied; said for SQLite's planner (the partial index)
            runs.c.owner.is_not(None),
            runs.c.owner != CELERY_OWNER,
        )
        if run_id is not None:
            query = query.where(runs.c.id == run_id)
        with self._ctx.engine.connect() as c:
            candidates = c.execute(query).all()
        reaped = []
        for rid, owner, lease in candidates:
            if owner_alive(owner) is False or lease is None or lease <= now:
                why = f"the process running this step ({owner}) stopped before the step finished"
                if self._mark_interrupted(rid, owner, why, require_expired=owner_alive(owner) is not False):
                    reaped.append(rid)
        return reaped

    def reap_owned(self, run_id: str, owner: str, why: str) -> None:
        """Mark a run this process owns interrupted (it is stopping mid-run: Ctrl-C, shutdown)."""
        self._mark_interrupted(run_id, owner, why, require_expired=False)

    def _mark_interrupted(self, run_id: str, owner: str, why: str, *, require_expired: bool) -> bool:
        now = utcnow()
        with self._ctx.engine.begin() as c:
            row = c.execute(self._locked(c, run_id, runs)).mappings().first()
            if row is None or row["owner"] != owner or row["status"] not in (RunStatus.RUNNING, RunStatus.PENDING):
                return False
            if require_expired and row["lease_expires_at"] is not None and row["lease_expires_at"] > now:
                return False  # the owner renewed its lease since we looked
            by_idx = {r["idx"]: r for r in c.execute(select(steps).where(steps.c.run_id == run_id)).mappings()}
            current = current_step(row, by_idx) if row["status"] == RunStatus.RUNNING else None
            name = names(row["step_names"])[current[0]] if current else None
            c.execute(
                update(runs).where(runs.c.id == run_id).values(**ended(RunStatus.INTERRUPTED, now), failed_step=name)
            )
            if current is not None and name is not None:
                idx, attempt, started = current
                result = StepResult(
                    idx=idx,
                    name=name,
                    attempt=attempt,
                    started_at=started or now,
                    finished_at=now,
                    error=ErrorInfo(type="Interrupted", message=why),
                )
                write_step(c, run_id, result, StepStatus.INTERRUPTED)
        return True
