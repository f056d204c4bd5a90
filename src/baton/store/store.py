"""The run store: runs, steps and attempts in SQL, written in as few statements as durability allows."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, or_, select, update

from baton._owner import owner_alive
from baton.errors import RunNotFound, UserError
from baton.run import AttemptError, ErrorInfo, Run, StepRecord, Tokens
from baton.status import RunStatus, StepStatus
from baton.store.engine import RawJSON, make_engine, migrate
from baton.store.schema import attempts, runs, steps

__all__ = ["LostOwnership", "RunStore", "StepResult", "utcnow"]


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo: the store keeps naive UTC on every backend."""
    return datetime.now(UTC).replace(tzinfo=None)


class LostOwnership(Exception):
    """This process no longer owns the run (it was declared interrupted, or cancelled and claimed elsewhere)."""


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
    tokens_in: int = 0
    tokens_out: int = 0


_UPDATE_STEP = (
    update(steps)
    .where(steps.c.run_id == bindparam("b_run_id"), steps.c.idx == bindparam("b_idx"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        output=bindparam("output"),
        error_type=bindparam("error_type"),
        error_message=bindparam("error_message"),
        error_traceback=bindparam("error_traceback"),
        tokens_in=bindparam("tokens_in"),
        tokens_out=bindparam("tokens_out"),
        started_at=bindparam("started_at"),
        finished_at=bindparam("finished_at"),
        duration_ms=bindparam("duration_ms"),
    )
)


class RunStore:
    """Runs, steps and attempts in a SQL database (SQLite or PostgreSQL), one code path for both."""

    def __init__(self, url: str, *, lease_seconds: float = 60.0) -> None:
        self.engine: Engine = make_engine(url)
        self.url = url
        self.lease = timedelta(seconds=lease_seconds)
        migrate(self.engine)

    def close(self) -> None:
        """Release the store's connections."""
        self.engine.dispose()

    @contextlib.contextmanager
    def transaction(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A transaction, or the caller's, so that writes which belong together commit together."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as own:
            yield own

    # -- writing a run ----------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: str,
        pipeline: str,
        target: str | None,
        input_json: str,
        step_names: Sequence[str],
        owner: str | None,
        conn: Connection | None = None,
    ) -> None:
        """Record a new run: running (owned by `owner`, at its first step) or, with no owner, pending."""
        now = utcnow()
        running = owner is not None
        with self.transaction(conn) as c:
            c.execute(
                runs.insert(),
                {
                    "id": run_id,
                    "pipeline": pipeline,
                    "target": target,
                    "status": RunStatus.RUNNING if running else RunStatus.PENDING,
                    "input": RawJSON(input_json),
                    "output": None,
                    "step_names": list(step_names),
                    "current_step": 0 if running else None,
                    "current_attempt": 1 if running else 0,
                    "current_started_at": now if running else None,
                    "failed_step": None,
                    "cancel_requested": False,
                    "owner": owner,
                    "lease_expires_at": now + self.lease if running else None,
                    "tokens_in": 0,
                    "tokens_out": 0,
                    "created_at": now,
                    "started_at": now if running else None,
                    "finished_at": None,
                    "updated_at": now,
                },
            )

    def claim(self, run_id: str, owner: str, *, start_idx: int, attempt: int, statuses: Sequence[str]) -> bool:
        """Take a run in one of `statuses` for `owner`, at step `start_idx`; False if someone else has it."""
        now = utcnow()
        with self.engine.begin() as c:
            result = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_(list(statuses)))
                .values(
                    status=RunStatus.RUNNING,
                    owner=owner,
                    lease_expires_at=now + self.lease,
                    current_step=start_idx,
                    current_attempt=attempt,
                    current_started_at=now,
                    failed_step=None,
                    finished_at=None,
                    started_at=func.coalesce(runs.c.started_at, now),
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    def checkpoint(
        self,
        run_id: str,
        owner: str,
        result: StepResult,
        *,
        replace: bool,
        next_idx: int | None,
        final_output: str | None = None,
        conn: Connection | None = None,
    ) -> bool:
        """Save a step's output and move the run on, in one transaction.

        With `next_idx`, the run goes on at that step; otherwise it has succeeded with `final_output`.
        `replace` says a row for the step exists already (an earlier failed attempt). Returns True when a
        cancel was requested. Raises `LostOwnership` when `owner` no longer owns the run; nothing is written.
        """
        now = result.finished_at
        values: dict[str, Any] = {"updated_at": now, "lease_expires_at": now + self.lease}
        if next_idx is None:
            values |= {
                "status": RunStatus.SUCCEEDED,
                "output": RawJSON(final_output or "null"),
                "finished_at": now,
                "current_step": None,
                "owner": None,
                "lease_expires_at": None,
            }
        else:
            values |= {"current_step": next_idx, "current_attempt": 1, "current_started_at": now}
        if result.tokens_in or result.tokens_out:
            values["tokens_in"] = runs.c.tokens_in + result.tokens_in
            values["tokens_out"] = runs.c.tokens_out + result.tokens_out
        with self.transaction(conn) as c:
            row = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING)
                .values(**values)
                .returning(runs.c.cancel_requested)
            ).first()
            if row is None:
                raise LostOwnership(run_id)
            self._write_step(c, run_id, result, StepStatus.SUCCEEDED, replace=replace)
            return bool(row[0])

    def record_failure(
        self,
        run_id: str,
        owner: str,
        result: StepResult,
        *,
        retrying: bool,
        replace: bool,
        conn: Connection | None = None,
    ) -> None:
        """Keep a failed attempt; unless another attempt follows, the step and the run end failed."""
        error = result.error
        assert error is not None
        now = utcnow()
        with self.transaction(conn) as c:
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
            if retrying:
                values: dict[str, Any] = {"current_attempt": result.attempt + 1, "lease_expires_at": now + self.lease}
            else:
                values = {
                    "status": RunStatus.FAILED,
                    "failed_step": result.name,
                    "finished_at": now,
                    "current_step": None,
                    "owner": None,
                    "lease_expires_at": None,
                }
            values["updated_at"] = now
            c.execute(update(runs).where(runs.c.id == run_id, runs.c.owner == owner).values(**values))
            if not retrying:
                self._write_step(c, run_id, result, StepStatus.FAILED, replace=replace)

    def start_attempt(self, run_id: str, owner: str, attempt: int) -> None:
        """Record that a new attempt of the current step starts now (after a retry's wait)."""
        now = utcnow()
        with self.engine.begin() as c:
            c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.owner == owner)
                .values(current_attempt=attempt, current_started_at=now, lease_expires_at=now + self.lease)
            )

    def finish_cancelled(self, run_id: str, owner: str | None = None) -> None:
        """End a run cancelled: nothing after its current step will start."""
        now = utcnow()
        cond = [runs.c.id == run_id]
        if owner is not None:
            cond.append(runs.c.owner == owner)
        with self.engine.begin() as c:
            c.execute(
                update(runs)
                .where(*cond)
                .values(
                    status=RunStatus.CANCELLED,
                    finished_at=now,
                    updated_at=now,
                    current_step=None,
                    owner=None,
                    lease_expires_at=None,
                )
            )

    def request_cancel(self, run_id: str) -> RunStatus:
        """Cancel a run: at once if nothing runs it, else after its current step. Returns the new status."""
        run_id = self.resolve_id(run_id)
        self.reap(run_id)
        now = utcnow()
        idle = [RunStatus.PENDING, RunStatus.FAILED, RunStatus.INTERRUPTED]
        with self.engine.begin() as c:
            done = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_(idle))
                .values(status=RunStatus.CANCELLED, finished_at=now, updated_at=now, cancel_requested=True)
            ).rowcount
            if done:
                return RunStatus.CANCELLED
            live = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING)
                .values(cancel_requested=True, updated_at=now)
            ).rowcount
            if live:
                return RunStatus.RUNNING
            status = c.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar_one()
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
        """Mark running runs whose process died (or whose lease ran out) interrupted; returns their ids."""
        now = utcnow()
        query = select(
            runs.c.id, runs.c.owner, runs.c.lease_expires_at, runs.c.current_step, runs.c.current_attempt,
            runs.c.current_started_at, runs.c.step_names,
        ).where(runs.c.status == RunStatus.RUNNING)
        if run_id is not None:
            query = query.where(runs.c.id == run_id)
        with self.engine.connect() as c:
            candidates = c.execute(query).all()
        reaped = []
        for rid, owner, lease, current, attempt, started, names in candidates:
            alive = owner_alive(owner) if owner else False
            if alive is None:
                alive = lease is not None and lease > now
            if not alive:
                why = f"the process running this step ({owner}) stopped before the step finished"
                if self._mark_interrupted(rid, owner, current, attempt, started, _names(names), why):
                    reaped.append(rid)
        return reaped

    def reap_owned(self, run_id: str, owner: str, why: str) -> None:
        """Mark a run this process owns interrupted (it is stopping mid-run: Ctrl-C, shutdown)."""
        with self.engine.connect() as c:
            row = c.execute(
                select(runs.c.current_step, runs.c.current_attempt, runs.c.current_started_at, runs.c.step_names)
                .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING)
            ).first()
        if row is not None:
            self._mark_interrupted(run_id, owner, row[0], row[1], row[2], _names(row[3]), why)

    def _mark_interrupted(
        self, run_id: str, owner: str | None, current: int | None, attempt: int,
        started: datetime | None, names: list[str], why: str,
    ) -> bool:
        now = utcnow()
        name = names[current] if current is not None and current < len(names) else None
        with self.engine.begin() as c:
            owner_cond = runs.c.owner == owner if owner is not None else runs.c.owner.is_(None)
            changed = c.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING, owner_cond)
                .values(
                    status=RunStatus.INTERRUPTED,
                    failed_step=name,
                    finished_at=now,
                    updated_at=now,
                    owner=None,
                    lease_expires_at=None,
                )
            ).rowcount
            if not changed or current is None or name is None:
                return bool(changed)
            error = ErrorInfo(type="Interrupted", message=why)
            exists = c.execute(
                select(steps.c.attempts).where(steps.c.run_id == run_id, steps.c.idx == current)
            ).first()
            result = StepResult(
                idx=current, name=name, attempt=attempt, started_at=started or now, finished_at=now, error=error
            )
            self._write_step(c, run_id, result, StepStatus.INTERRUPTED, replace=exists is not None)
        return True

    def _write_step(self, c: Connection, run_id: str, r: StepResult, status: StepStatus, *, replace: bool) -> None:
        error = r.error
        values = {
            "status": status,
            "attempts": r.attempt,
            "output": RawJSON(r.output_json) if r.output_json is not None else None,
            "error_type": error.type if error else None,
            "error_message": error.message if error else None,
            "error_traceback": error.traceback if error else None,
            "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "duration_ms": (r.finished_at - r.started_at).total_seconds() * 1000.0,
        }
        if replace:
            c.execute(_UPDATE_STEP, {"b_run_id": run_id, "b_idx": r.idx, **values})
        else:
            c.execute(steps.insert(), {"run_id": run_id, "idx": r.idx, "name": r.name, **values})

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
                c.execute(select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.id))
                .mappings()
                .all()
            )
        return _run_from_rows(row, step_rows, attempt_rows)

    def list_runs(
        self,
        *,
        status: str | None = None,
        pipeline: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Run]:
        """Runs newest first (without step records), filtered; `before` is a keyset cursor (created_at, id)."""
        self.reap()
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        if status:
            query = query.where(runs.c.status == status)
        if pipeline:
            query = query.where(runs.c.pipeline == pipeline)
        if before is not None:
            at, rid = before
            query = query.where(or_(runs.c.created_at < at, and_(runs.c.created_at == at, runs.c.id < rid)))
        with self.engine.connect() as c:
            rows = c.execute(query).mappings().all()
        return [_run_from_rows(row, None, ()) for row in rows]

    def count_step_rows(self, run_id: str) -> dict[int, str]:
        """The recorded status of each step index that has a row (for resume)."""
        with self.engine.connect() as c:
            rows = c.execute(select(steps.c.idx, steps.c.status).where(steps.c.run_id == run_id)).all()
        return {idx: status for idx, status in rows}

    def describe(self) -> str:
        """The store's URL, without a password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)


def _names(value: Any) -> list[str]:
    return json.loads(value) if isinstance(value, str) else list(value)


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _error(type_: str | None, message: str | None, tb: str | None) -> ErrorInfo | None:
    if type_ is None:
        return None
    return ErrorInfo(type=type_, message=message or "", traceback=tb)


def _run_from_rows(row: Any, step_rows: Sequence[Any] | None, attempt_rows: Sequence[Any]) -> Run:
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
        for idx, name in enumerate(_names(row["step_names"])):
            r = by_idx.get(idx)
            history = errors_by_idx.get(idx, [])
            if status is RunStatus.RUNNING and idx == row["current_step"]:
                records.append(
                    StepRecord(
                        name=name,
                        status=StepStatus.RUNNING,
                        attempts=row["current_attempt"],
                        started_at=row["current_started_at"],
                        attempt_errors=history,
                    )
                )
            elif r is not None:
                records.append(
                    StepRecord(
                        name=name,
                        status=StepStatus(r["status"]),
                        attempts=r["attempts"],
                        output=_load(r["output"]),
                        error=_error(r["error_type"], r["error_message"], r["error_traceback"]),
                        tokens=Tokens(input=r["tokens_in"], output=r["tokens_out"]),
                        duration_ms=r["duration_ms"],
                        started_at=r["started_at"],
                        finished_at=r["finished_at"],
                        attempt_errors=history,
                    )
                )
            else:
                pending = StepStatus.CANCELLED if status is RunStatus.CANCELLED else StepStatus.PENDING
                records.append(StepRecord(name=name, status=pending, attempt_errors=history))
    return Run(
        id=row["id"],
        pipeline=row["pipeline"],
        status=status,
        input=_load(row["input"]),
        output=_load(row["output"]),
        steps=records,
        target=row["target"],
        failed_step=row["failed_step"],
        cancel_requested=row["cancel_requested"],
        tokens=Tokens(input=row["tokens_in"], output=row["tokens_out"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
