"""Rows the parts of the store write alike: a step's result, its error columns, an attempt, a run that ends.

A step's error is five columns (`STEP_ERROR_COLUMNS`); an attempt's history keeps the first three. They are
spelled here once: `error_columns` maps an `ErrorInfo` to them (None clears them), `error_from_row` reads it
back, and `CLEAR_ERRORS_SQL` clears them in the hand-written SQL of the hot paths.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update

from baton.run import ErrorInfo
from baton.status import RunStatus, StepStatus
from baton.store.engine import RawJSON
from baton.store.schema import steps

__all__ = [
    "CLEAR_ERRORS_SQL",
    "STEP_ERROR_COLUMNS",
    "StepResult",
    "as_json",
    "attempt_row",
    "ended",
    "error_columns",
    "error_from_row",
    "live_lease_count",
    "load",
    "names",
    "write_step",
]

STEP_ERROR_COLUMNS = ("error_type", "error_message", "error_traceback", "error_raw", "error_details")
# An attempt's history keeps what was raised, not the model's answer.
_ATTEMPT_ERROR_COLUMNS = STEP_ERROR_COLUMNS[:3]
CLEAR_ERRORS_SQL = ", ".join(f"{column} = NULL" for column in STEP_ERROR_COLUMNS)


def error_columns(error: ErrorInfo | None) -> dict[str, Any]:
    """The step columns that hold `error` (all None when there is none: they are cleared)."""
    if error is None:
        return dict.fromkeys(STEP_ERROR_COLUMNS)
    details = list(error.validation_errors) if error.validation_errors else None
    values = (error.type, error.message, error.traceback, error.raw_output, details)
    return dict(zip(STEP_ERROR_COLUMNS, values, strict=True))


def error_from_row(row: Mapping[str, Any]) -> ErrorInfo | None:
    """The error a step's (or an attempt's) row holds, or None."""
    if row["error_type"] is None:
        return None
    details = load(row.get("error_details"))
    return ErrorInfo(
        type=row["error_type"],
        message=row["error_message"] or "",
        traceback=row["error_traceback"],
        raw_output=row.get("error_raw"),
        validation_errors=tuple(details) if details is not None else None,
    )


def attempt_row(
    run_id: str,
    idx: int,
    attempt: int,
    error: ErrorInfo,
    *,
    retried: bool,
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    """The `baton_attempts` row of an attempt that ended in `error`."""
    columns = error_columns(error)
    kept = {column: columns[column] for column in _ATTEMPT_ERROR_COLUMNS}
    return {
        "run_id": run_id, "step_idx": idx, "attempt": attempt, **kept, "retried": retried,
        "started_at": started_at, "finished_at": finished_at,
    }  # fmt: skip


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
        **{column: bindparam(column) for column in STEP_ERROR_COLUMNS},
        started_at=bindparam("started_at"),
        finished_at=bindparam("finished_at"),
        duration_ms=bindparam("duration_ms"),
        lease_owner=None,
        lease_expires_at=None,
    )
)


def write_step(c: Connection, run_id: str, r: StepResult, status: StepStatus) -> None:
    """Write a step's row as `r` left it (unless it already succeeded), on `c`, inside its transaction."""
    values = {
        "status": status,
        "attempts": r.attempt,
        "output": RawJSON(r.output_json) if r.output_json is not None else None,
        **error_columns(r.error),
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


def live_lease_count(c: Connection, run_id: str, now: datetime) -> int:
    """How many steps of the run a worker holds right now."""
    query = (
        select(func.count())
        .select_from(steps)
        .where(
            steps.c.run_id == run_id,
            steps.c.lease_owner.is_not(None),
            or_(steps.c.lease_expires_at.is_(None), steps.c.lease_expires_at >= now),
        )
    )
    return int(c.execute(query).scalar_one())


def ended(status: RunStatus, now: datetime) -> dict[str, Any]:
    """The run columns of a run that stops: nobody owns it any more."""
    return {
        "status": status,
        "finished_at": now,
        "updated_at": now,
        "current_step": None,
        "owner": None,
        "lease_expires_at": None,
    }


def names(value: Any) -> list[str]:
    """A run's step names, from the JSON column as either backend returns it."""
    return json.loads(value) if isinstance(value, str) else list(value)


def load(value: Any) -> Any:
    """A JSON column's value: SQLite hands back text, PostgreSQL parsed values."""
    return json.loads(value) if isinstance(value, str) else value


def as_json(value: Any) -> str | None:
    """A JSON column's value as JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)
