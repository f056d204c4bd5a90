"""Reading a run back: its row, its steps, their attempts and calls, into a `Run`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from baton.run import AttemptError, CallRecord, Run, StepRecord, Tokens
from baton.status import RunStatus, StepStatus
from baton.store.rows import error_from_row, load, names

__all__ = ["current_step", "run_from_rows"]


def current_step(row: Any, by_idx: dict[int, Any]) -> tuple[int, int, datetime | None] | None:
    """The step a running run is at: (index, attempt, started at).

    Checkpoints do not touch the run's row (that would cost a statement a step), so the current step is
    the first one without a successful checkpoint; `current_*` columns hold what the claim or the last
    retry wrote, and count only when they name that step.
    """
    count = len(names(row["step_names"]))
    done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
    idx = next((i for i in range(count) if i not in by_idx or by_idx[i]["status"] not in done), None)
    if idx is None:
        return None
    if idx == row["current_step"]:
        return idx, row["current_attempt"], row["current_started_at"]
    previous = by_idx.get(idx - 1)
    return idx, 1, previous["finished_at"] if previous is not None else row["current_started_at"]


def run_from_rows(
    row: Any, step_rows: Sequence[Any] | None, attempt_rows: Sequence[Any], call_rows: Sequence[Any] = ()
) -> Run:
    """A `Run` from its row and, unless `step_rows` is None (a listing), its steps, attempts and calls."""
    status = RunStatus(row["status"])
    records: list[StepRecord] = []
    if step_rows is not None:
        by_idx = {r["idx"]: r for r in step_rows}
        errors_by_idx: dict[int, list[AttemptError]] = {}
        for a in attempt_rows:
            error = error_from_row(a)
            assert error is not None  # an attempt's error_type is NOT NULL
            errors_by_idx.setdefault(a["step_idx"], []).append(
                AttemptError(
                    attempt=a["attempt"],
                    error=error,
                    retried=a["retried"],
                    started_at=a["started_at"],
                    finished_at=a["finished_at"],
                )
            )
        # The local runtime writes a step's row when it ends; a celery worker writes it when it claims the step.
        local = row["runtime"] != "celery"
        current = current_step(row, by_idx) if status is RunStatus.RUNNING and local else None
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
        for idx, name in enumerate(names(row["step_names"])):
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
                        output=load(r["output"]),
                        error=error_from_row(r),
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
        input=load(row["input"]),
        output=load(row["output"]),
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
        resumed_at=row["resumed_at"],
        kind=row["kind"],
    )
