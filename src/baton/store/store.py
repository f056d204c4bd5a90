"""The run store: runs, steps and attempts in SQL, written in as few statements as durability allows."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, case, func, select, update
from sqlalchemy.exc import OperationalError

from baton._context import LLMCall
from baton._owner import owner_alive
from baton.errors import RunNotFound, StoreUnavailable, UserError
from baton.run import AttemptError, CallRecord, ErrorInfo, Run, StepRecord, Tokens
from baton.status import RunStatus, StepStatus
from baton.store.browse import RunBrowser, RunFilter
from baton.store.claims import LeaseClaimer
from baton.store.effects import EffectLedger
from baton.store.engine import RawJSON, make_engine, migrate
from baton.store.events import EventStore
from baton.store.leases import CELERY_OWNER, StepLeases
from baton.store.schema import attempts, events, llm_calls, runs, steps
from baton.store.writer import LostOwnership, RunWriter, recount_step, write_calls

__all__ = ["CELERY_OWNER", "RunStore", "StepResult", "utcnow"]

_Kept = TypeVar("_Kept", RunWriter, LeaseClaimer)


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo: the store keeps naive UTC on every backend."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What an attempt of a step produced, ready to be written."""

    idx: int
    name: str
    attempt: int
    started_at: datetime
    finished_at: datetime
    output_json: str | None = None
    error: ErrorInfo | None = None


_UPDATE_STEP = (
    update(steps)
    .where(
        steps.c.run_id == bindparam("b_run_id"),
        steps.c.idx == bindparam("b_idx"),
        steps.c.status != StepStatus.SUCCEEDED.value,
    )
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        output=bindparam("output"),
        error_type=bindparam("error_type"),
        error_message=bindparam("error_message"),
        error_traceback=bindparam("error_traceback"),
        error_raw=bindparam("error_raw"),
        error_details=bindparam("error_details"),
        started_at=bindparam("started_at"),
        finished_at=bindparam("finished_at"),
        duration_ms=bindparam("duration_ms"),
        lease_owner=None,
        lease_expires_at=None,
    )
)


class RunStore(StepLeases, EventStore, RunBrowser, EffectLedger):
    """Runs, steps and attempts in a SQL database (SQLite or PostgreSQL), one code path for both."""

    def __init__(self, url: str, *, lease_seconds: float = 60.0) -> None:
        self.engine: Engine = make_engine(url)
        self.url = url
        self.lease = timedelta(seconds=lease_seconds)
        self._local = threading.local()
        # Each kept connection with the thread that keeps it: a thread that ended gives its connections back.
        self._writers: list[tuple[threading.Thread, RunWriter | LeaseClaimer]] = []
        self._writers_lock = threading.Lock()
        try:
            migrate(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreUnavailable(f"cannot reach the run store at {self.describe()}: {reason}") from None

    def close(self) -> None:
        """Release the store's connections."""
        with self._writers_lock:
            for _, writer in self._writers:
                writer.close()
            self._writers.clear()
        self._local = threading.local()
        self.engine.dispose()

    # -- writing a run ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, *, scoped: bool = False) -> Iterator[RunWriter]:
        """The hot-path writer (creating runs, checkpoints) of this thread, on a connection it keeps.

        Keeping one connection per thread saves a pool checkout and a reset per run; a connection that
        broke (a database restart) is replaced on the next use. A `scoped` writer is for a short-lived
        thread (a supervisor's worker): its connection goes back to the pool when the block ends.
        """
        if scoped:
            own = RunWriter(self.engine.raw_connection(), self.engine.dialect.name, self.lease.total_seconds())
            try:
                yield own
            finally:
                own.close()
            return
        yield self._kept(
            "writer",
            lambda: RunWriter(self.engine.raw_connection(), self.engine.dialect.name, self.lease.total_seconds()),
        )

    def _kept(self, slot: str, make: Callable[[], _Kept]) -> _Kept:
        """This thread's connection-holding object in `slot`, made anew when missing or broken."""
        kept: _Kept | None = getattr(self._local, slot, None)
        if kept is None or kept.broken():
            if kept is not None:
                kept.close()
            kept = make()
            setattr(self._local, slot, kept)
            with self._writers_lock:
                # Threads come and go (a dispatcher that ends when idle, a user's threads): give back the
                # connections of those that ended, so that they never drain the pool.
                alive = []
                for thread, other in self._writers:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                alive.append((threading.current_thread(), kept))
                self._writers = alive
        return kept

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
    ) -> bool:
        """Take a run in one of `statuses` for `owner`, at step `start_idx`; False if it is not as expected.

        `claims` makes the claim conditional on the run not having been claimed since it was read (a resume
        plans from what it read); `only_owner` lets a process take a pending run it submitted itself. An
        explicit claim is a new intent, so an earlier cancel request is forgotten.
        """
        now = utcnow()
        cond = [runs.c.id == run_id, runs.c.status.in_(list(statuses))]
        if claims is not None:
            cond.append(runs.c.claims == claims)
        if only_owner is not None:
            cond.append(runs.c.owner == only_owner)
        with self.engine.begin() as c:
            result = c.execute(
                update(runs)
                .where(*cond)
                .values(
                    status=RunStatus.RUNNING,
                    owner=owner,
                    lease_expires_at=now + self.lease,
                    current_step=start_idx,
                    current_attempt=attempt,
                    current_started_at=now,
                    failed_step=None,
                    finished_at=None,
                    cancel_requested=False,
                    claims=runs.c.claims + 1,
                    started_at=func.coalesce(runs.c.started_at, now),
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    def record_calls(self, run_id: str, idx: int, attempt: int, calls: Sequence[LLMCall]) -> None:
        """Keep model calls the moment they are made: they were paid for, whatever happens to the attempt."""
        with self.engine.begin() as c:
            cursor = c.connection.cursor()
            try:
                write_calls(cursor, self.engine.dialect.name, run_id, idx, attempt, calls)
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
    ) -> bool:
        """Keep a failed attempt; unless another attempt follows, the step and the run end failed.

        Returns whether a cancel was requested; when one was and no attempt follows, the run ends cancelled
        (the step keeps its error). Raises `LostOwnership`, writing nothing, when `owner` lost the run (or
        `lease_owner`, given, no longer holds the step's lease; the lease ends here either way).
        """
        error = result.error
        assert error is not None
        now = utcnow()
        with self.engine.begin() as c:
            values: dict[str, Any] = {"updated_at": now, "lease_expires_at": now + self.lease}
            if not retrying and end_run:
                stopped = case((runs.c.cancel_requested, RunStatus.CANCELLED.value), else_=RunStatus.FAILED.value)
                values |= _ended(RunStatus.FAILED, now) | {"status": stopped, "failed_step": result.name}
            row = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING)
                .values(**values)
                .returning(runs.c.cancel_requested)
            ).first()
            if row is None:
                raise LostOwnership(run_id)
            if lease_owner is not None:
                # Pending again until the retry claims it; a failure for good is written just below.
                released = c.execute(
                    update(steps)
                    .where(steps.c.run_id == run_id, steps.c.idx == result.idx, steps.c.lease_owner == lease_owner)
                    .values(lease_owner=None, lease_expires_at=None, status=StepStatus.PENDING)
                ).rowcount
                if not released:
                    raise LostOwnership(run_id)
            c.execute(
                attempts.insert(),
                {
                    "run_id": run_id,
                    "step_idx": result.idx,
                    "attempt": result.attempt,
                    "error_type": error.type,
                    "error_message": error.message,
                    "error_traceback": error.traceback,
                    "retried": retrying,
                    "started_at": result.started_at,
                    "finished_at": result.finished_at,
                },
            )
            if not retrying:
                self._write_step(c, run_id, result, StepStatus.FAILED)
            if recount and not retrying:
                cursor = c.connection.cursor()
                try:
                    recount_step(cursor, self.engine.dialect.name, run_id, result.idx)
                finally:
                    cursor.close()
            return bool(row[0])

    def end_failed(self, run_id: str, owner: str, failed_step: str) -> None:
        """End a run failed after its parallel steps finished (or cancelled, if a cancel was asked)."""
        now = utcnow()
        stopped = case((runs.c.cancel_requested, RunStatus.CANCELLED.value), else_=RunStatus.FAILED.value)
        with self.engine.begin() as c:
            c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING)
                .values(**(_ended(RunStatus.FAILED, now) | {"status": stopped, "failed_step": failed_step}))
            )

    def mark_skipped(self, run_id: str, owner: str, skipped: Sequence[tuple[int, str]]) -> None:
        """Record steps that will not run in this run (workers the router did not choose)."""
        now = utcnow()
        with self.engine.begin() as c:
            fenced = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING)
                .values(updated_at=now)
            ).rowcount
            if not fenced:
                raise LostOwnership(run_id)
            for idx, name in skipped:
                result = StepResult(idx=idx, name=name, attempt=0, started_at=now, finished_at=now)
                self._write_step(c, run_id, result, StepStatus.SKIPPED)

    def start_attempt(self, run_id: str, owner: str, idx: int, attempt: int) -> bool:
        """Record that attempt `attempt` of step `idx` starts now (after a retry's wait).

        Returns whether a cancel was requested (then the attempt must not start). Raises `LostOwnership`
        when `owner` lost the run.
        """
        now = utcnow()
        with self.engine.begin() as c:
            row = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING)
                .values(
                    current_step=idx,
                    current_attempt=attempt,
                    current_started_at=now,
                    lease_expires_at=now + self.lease,
                    updated_at=now,
                )
                .returning(runs.c.cancel_requested)
            ).first()
        if row is None:
            raise LostOwnership(run_id)
        return bool(row[0])

    def finish_cancelled(self, run_id: str, owner: str | None = None) -> None:
        """End a run cancelled: nothing after its current step will start."""
        now = utcnow()
        cond = [runs.c.id == run_id, runs.c.status == RunStatus.RUNNING]
        if owner is not None:
            cond.append(runs.c.owner == owner)
        with self.engine.begin() as c:
            c.execute(update(runs).where(*cond).values(**_ended(RunStatus.CANCELLED, now)))

    def request_cancel(self, run_id: str) -> RunStatus:
        """Cancel a run: at once if nothing runs it, else after its current step. Returns the new status."""
        run_id = self.resolve_id(run_id)
        self.reap(run_id)
        now = utcnow()
        with self.engine.begin() as c:
            # Lock the run first (as the reaper does), so that a celery worker's claim either committed before
            # (its lease is seen below) or waits and then finds the run cancelled.
            query = select(runs.c.status, runs.c.owner).where(runs.c.id == run_id)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update()
            else:
                c.execute(update(runs).where(runs.c.id == run_id).values(updated_at=runs.c.updated_at))
            status, owner = c.execute(query).one()
            idle = status in (RunStatus.PENDING, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.AWAITING_APPROVAL)
            if status == RunStatus.RUNNING and owner == CELERY_OWNER:
                # A celery run that no worker is executing right now is idle too: its queued messages will
                # find it cancelled and do nothing.
                idle = self.live_leases(run_id, now, conn=c) == 0
            if idle:
                c.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(**(_ended(RunStatus.CANCELLED, now) | {"cancel_requested": True}))
                )
                return RunStatus.CANCELLED
            if status == RunStatus.RUNNING:
                c.execute(update(runs).where(runs.c.id == run_id).values(cancel_requested=True, updated_at=now))
                return RunStatus.RUNNING
        raise UserError(f"run {run_id} is already {status}; there is nothing to cancel")

    def heartbeat(self, owner: str, run_ids: Sequence[str]) -> None:
        """Extend the lease of the runs `owner` is executing."""
        if not run_ids:
            return
        now = utcnow()
        with self.engine.begin() as c:
            c.execute(
                update(runs)
                .where(runs.c.id.in_(list(run_ids)), runs.c.owner == owner)
                .values(lease_expires_at=now + self.lease)
            )

    def reap(self, run_id: str | None = None) -> list[str]:
        """Mark runs whose owner died or whose lease ran out interrupted (resumable); returns their ids.

        An owner on this machine is dead when its process is; any owner is dead when it stopped renewing its
        lease (a heartbeat renews it while a run executes or waits to start).
        """
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
        with self.engine.connect() as c:
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
        with self.engine.begin() as c:
            # Lock the run before reading it, so that its owner cannot checkpoint in between: a write
            # first on SQLite (it takes the database's write lock), FOR UPDATE on PostgreSQL.
            query = select(runs).where(runs.c.id == run_id)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update()
            else:
                c.execute(update(runs).where(runs.c.id == run_id).values(updated_at=runs.c.updated_at))
            row = c.execute(query).mappings().first()
            if row is None or row["owner"] != owner or row["status"] not in (RunStatus.RUNNING, RunStatus.PENDING):
                return False
            if require_expired and row["lease_expires_at"] is not None and row["lease_expires_at"] > now:
                return False  # the owner renewed its lease since we looked
            by_idx = {r["idx"]: r for r in c.execute(select(steps).where(steps.c.run_id == run_id)).mappings()}
            current = _current_step(row, by_idx) if row["status"] == RunStatus.RUNNING else None
            name = _names(row["step_names"])[current[0]] if current else None
            c.execute(
                update(runs).where(runs.c.id == run_id).values(**_ended(RunStatus.INTERRUPTED, now), failed_step=name)
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
                self._write_step(c, run_id, result, StepStatus.INTERRUPTED)
        return True

    def _write_step(self, c: Connection, run_id: str, r: StepResult, status: StepStatus) -> None:
        error = r.error
        values = {
            "status": status,
            "attempts": r.attempt,
            "output": RawJSON(r.output_json) if r.output_json is not None else None,
            "error_type": error.type if error else None,
            "error_message": error.message if error else None,
            "error_traceback": error.traceback if error else None,
            "error_raw": error.raw_output if error else None,
            "error_details": list(error.validation_errors) if error and error.validation_errors else None,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "duration_ms": (r.finished_at - r.started_at).total_seconds() * 1000.0,
        }
        # A succeeded step is never overwritten: its checkpoint is what makes resume skip it. The callers
        # hold the run (as its owner, or under the reaper's lock), so update-then-insert cannot race.
        if c.execute(_UPDATE_STEP, {"b_run_id": run_id, "b_idx": r.idx, **values}).rowcount:
            return
        exists = c.execute(select(steps.c.status).where(steps.c.run_id == run_id, steps.c.idx == r.idx)).first()
        if exists is None:
            c.execute(
                steps.insert(),
                {"run_id": run_id, "idx": r.idx, "name": r.name, "tokens_in": 0, "tokens_out": 0, **values},
            )

    # -- reading ----------------------------------------------------------------------------------------

    def resolve_id(self, run_id: str) -> str:
        """The full id of the run `run_id` names (a unique prefix of at least 6 characters is enough)."""
        with self.engine.connect() as c:
            if c.execute(select(runs.c.id).where(runs.c.id == run_id)).first():
                return run_id
            if len(run_id) >= 6 and all(ch in "0123456789abcdef" for ch in run_id):
                found = c.execute(select(runs.c.id).where(runs.c.id.startswith(run_id)).limit(2)).scalars().all()
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise RunNotFound(f"run id prefix {run_id!r} is ambiguous; give more of the id")
        raise RunNotFound(f"no run with id {run_id!r} in {self.describe()}")

    def get_run(self, run_id: str) -> Run:
        """The run `run_id` (or a unique prefix) with every step; a dead owner's run shows interrupted."""
        run_id = self.resolve_id(run_id)
        self.reap(run_id)
        with self.engine.connect() as c:
            row = c.execute(select(runs).where(runs.c.id == run_id)).mappings().one()
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
        run = _run_from_rows(row, step_rows, attempt_rows, call_rows)
        run.emitted = tuple((i, t) for i, t in emitted)
        return run

    def list_runs(
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
    ) -> list[Run]:
        """Runs newest first (without step records), filtered; `before` is a keyset cursor (a run id)."""
        self.reap()
        where = RunFilter(status, pipeline, failed_step, since, until, correlation_id)
        query = select(runs).where(*where.conditions()).order_by(runs.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(runs.c.id < before)
        with self.engine.connect() as c:
            rows = c.execute(query).mappings().all()
        return [_run_from_rows(row, None, ()) for row in rows]

    def describe(self) -> str:
        """The store's URL, without a password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)


def _ended(status: RunStatus, now: datetime) -> dict[str, Any]:
    """The run columns of a run that stops: nobody owns it any more."""
    return {
        "status": status,
        "finished_at": now,
        "updated_at": now,
        "current_step": None,
        "owner": None,
        "lease_expires_at": None,
    }


def _names(value: Any) -> list[str]:
    return json.loads(value) if isinstance(value, str) else list(value)


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _error(r: Any) -> ErrorInfo | None:
    if r["error_type"] is None:
        return None
    details = _load(r["error_details"])
    return ErrorInfo(
        type=r["error_type"],
        message=r["error_message"] or "",
        traceback=r["error_traceback"],
        raw_output=r["error_raw"],
        validation_errors=tuple(details) if details is not None else None,
    )


def _current_step(row: Any, by_idx: dict[int, Any]) -> tuple[int, int, datetime | None] | None:
    """The step a running run is at: (index, attempt, started at).

    Checkpoints do not touch the run's row (that would cost a statement a step), so the current step is
    the first one without a successful checkpoint; `current_*` columns hold what the claim or the last
    retry wrote, and count only when they name that step.
    """
    count = len(_names(row["step_names"]))
    done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
    idx = next((i for i in range(count) if i not in by_idx or by_idx[i]["status"] not in done), None)
    if idx is None:
        return None
    if idx == row["current_step"]:
        return idx, row["current_attempt"], row["current_started_at"]
    previous = by_idx.get(idx - 1)
    return idx, 1, previous["finished_at"] if previous is not None else row["current_started_at"]


def _run_from_rows(
    row: Any, step_rows: Sequence[Any] | None, attempt_rows: Sequence[Any], call_rows: Sequence[Any] = ()
) -> Run:
    status = RunStatus(row["status"])
    records: list[StepRecord] = []
    if step_rows is not None:
        by_idx = {r["idx"]: r for r in step_rows}
        errors_by_idx: dict[int, list[AttemptError]] = {}
        for a in attempt_rows:
            errors_by_idx.setdefault(a["step_idx"], []).append(
                AttemptError(
                    attempt=a["attempt"],
                    error=ErrorInfo(type=a["error_type"], message=a["error_message"], traceback=a["error_traceback"]),
                    retried=a["retried"],
                    started_at=a["started_at"],
                    finished_at=a["finished_at"],
                )
            )
        # The local runtime writes a step's row when it ends; a celery worker writes it when it claims the step.
        local = row["runtime"] != "celery"
        current = _current_step(row, by_idx) if status is RunStatus.RUNNING and local else None
        calls_by_idx: dict[int, list[CallRecord]] = {}
        for call in call_rows:
            calls_by_idx.setdefault(call["step_idx"], []).append(
                CallRecord(
                    attempt=call["attempt"],
                    provider=call["provider"],
                    model=call["model"],
                    input_tokens=call["input_tokens"],
                    output_tokens=call["output_tokens"],
                    latency_ms=call["latency_ms"],
                    cost_usd=call["cost_usd"],
                    outcome=call["outcome"],
                    error=call["error"],
                )
            )
        for idx, name in enumerate(_names(row["step_names"])):
            r = by_idx.get(idx)
            history = errors_by_idx.get(idx, [])
            calls = tuple(calls_by_idx.get(idx, ()))
            # A step's usage is what its calls add up to, for a running step too.
            usage = Tokens(sum(x.input_tokens for x in calls), sum(x.output_tokens for x in calls))
            known = all(x.cost_usd is not None for x in calls)
            cost = sum((x.cost_usd or 0.0 for x in calls), 0.0) if known else None
            if current is not None and idx == current[0]:
                records.append(
                    StepRecord(
                        name=name,
                        status=StepStatus.RUNNING,
                        attempts=current[1],
                        started_at=current[2],
                        attempt_errors=tuple(history),
                        tokens=usage,
                        cost_usd=cost,
                        calls=calls,
                    )
                )
            elif r is not None:
                records.append(
                    StepRecord(
                        name=name,
                        status=StepStatus(r["status"]),
                        attempts=r["attempts"],
                        output=_load(r["output"]),
                        error=_error(r),
                        tokens=usage,
                        duration_ms=r["duration_ms"],
                        started_at=r["started_at"],
                        finished_at=r["finished_at"],
                        attempt_errors=tuple(history),
                        cost_usd=cost,
                        boundary_tokens=r["boundary_tokens"],
                        calls=calls,
                    )
                )
            else:
                pending = StepStatus.CANCELLED if status is RunStatus.CANCELLED else StepStatus.PENDING
                records.append(
                    StepRecord(
                        name=name,
                        status=pending,
                        attempt_errors=tuple(history),
                        tokens=usage,
                        cost_usd=cost,
                        calls=calls,
                    )
                )
    return Run(
        id=row["id"],
        pipeline=row["pipeline"],
        status=status,
        input=_load(row["input"]),
        output=_load(row["output"]),
        steps=tuple(records),
        target=row["target"],
        failed_step=row["failed_step"],
        cancel_requested=row["cancel_requested"],
        claims=row["claims"],
        runtime=row["runtime"],
        correlation_id=row["correlation_id"] or row["id"],
        trigger_event=row["trigger_event"],
        tokens=Tokens(input=row["tokens_in"], output=row["tokens_out"]),
        cost_usd=float(row["cost_usd"]) if row["cost_usd"] is not None else None,
        input_boundary_tokens=row["input_boundary_tokens"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        kind=row["kind"],
    )
