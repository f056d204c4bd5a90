"""What every runtime writes the same way: a new run's record."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from baton._ids import new_run_id
from baton.budgets import Budget, record_budget
from baton.errors import RunNotResumable
from baton.patterns.plan import RunSteps, States, resume_states
from baton.run import Run
from baton.store import CELERY_OWNER, RunStore, RunWriter, utcnow
from baton.tokens import count_tokens

__all__ = ["create_run", "read_run", "resumable"]


def create_run(
    writer: RunWriter,
    store: RunStore,
    pattern: Any,
    value: BaseModel,
    owner: str,
    *,
    pending: bool,
    runtime: str = "local",
    correlation_id: str | None = None,
    trigger_event: str | None = None,
    delivery: tuple[str, str | None] | None = None,
    budget: Budget | None = None,
) -> tuple[str | None, str, datetime, int | None]:
    """Record a new run of `pattern` on `value`: (its id, or None when the event `delivery` was already made;
    its input's JSON; now; the input's tokens when a model reads it).

    A run owned by one process holds a lease on the whole run; a celery run's steps hold theirs instead.
    Its budget (`budget`, else the pattern's) is written before it, so that no step of it runs without.
    """
    run_id = new_run_id()
    declared = budget is None
    budget = budget if budget is not None else getattr(pattern, "budget", None)
    if budget is not None:
        record_budget(store, run_id, correlation_id, budget, declared=declared)
    input_json = value.model_dump_json()
    # The run's input is a boundary too when a model reads it.
    input_tokens = count_tokens(input_json) if pattern.measure_input else None
    now = utcnow()
    created = writer.create_run(
        run_id=run_id,
        pipeline=pattern.name,
        target=pattern.target,
        input_json=input_json,
        step_names_json=json.dumps(pattern.step_names),
        owner=owner,
        now=now,
        lease_until=None if owner == CELERY_OWNER else now + store.lease,
        pending=pending,
        input_tokens=input_tokens,
        runtime=runtime,
        correlation_id=correlation_id,
        trigger_event=trigger_event,
        kind=pattern.kind,
        delivery=delivery,
    )
    if not created:
        if budget is not None and not budget.chain:
            store.budgets.forget(run_id)  # the run was not made: its budget belongs to nothing
        return None, input_json, now, input_tokens
    return run_id, input_json, now, input_tokens


def read_run(store: RunStore, pattern: Any, run_id: str) -> Run:
    """The recorded run that a resume or a retry of `pattern` starts from. A run whose owner is gone is
    reaped first (marked interrupted), so that it may go on; a run of another pattern is refused."""
    store.runs.reap(run_id)
    run = store.runs.get(run_id)
    if run.pipeline != pattern.name:
        raise RunNotResumable(f"run {run.id} belongs to pipeline '{run.pipeline}', not '{pattern.name}'")
    return run


def resumable(store: RunStore, pattern: Any, run_id: str) -> tuple[Run, States]:
    """The run a resume of `pattern` continues and the states it plans from. Refused now, before anything
    changes, when it cannot resume or when the input of what would run first no longer fits its contract
    (a checkpoint replayed against today's contracts)."""
    run = read_run(store, pattern, run_id)
    states = resume_states(run, pattern)
    nxt = pattern.plan(states)
    if isinstance(nxt, RunSteps):
        for idx in nxt.steps:
            pattern.input_of(idx, states)
    return run, states
