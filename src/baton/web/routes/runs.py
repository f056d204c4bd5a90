"""The runs API: list, start, show, and act on a run (resume, retry, cancel, approve, reject, settle an effect)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from baton.budgets import Budget
from baton.effects import NO_RESULT
from baton.patterns.registry import registered
from baton.status import RunStatus
from baton.web.bodies import LimitedRoute, read_json
from baton.web.deps import ActionsDep, RuntimeDep, StoreDep

__all__ = ["MarkEffectRequest", "RejectRequest", "RetryRequest", "router"]

router = APIRouter(route_class=LimitedRoute)


class RejectRequest(BaseModel):
    """The body of POST /runs/{id}/reject."""

    reason: str = Field(default="", max_length=500, description="Why: kept in the run's history")


class RetryRequest(BaseModel):
    """The body of POST /runs/{id}/retry."""

    from_step: str = Field(min_length=1, max_length=100, description="The step to run again, with the ones after it")
    confirm: bool = Field(
        default=False,
        description="Do again the side effects (an e-mail sent) that the steps run again already did; without "
        "it such a retry is refused (409, naming them)",
    )


class MarkEffectRequest(BaseModel):
    """The body of POST /runs/{id}/effects/mark: a person's word on an uncertain side effect."""

    key: str = Field(min_length=1, max_length=300, description="The effect's idempotency key")
    done: bool = Field(description="It happened (never do it again), or it did not (a retry may act)")
    result: Any = Field(
        default=None, description="With done: what the act returned, needed when the step uses it (JSON)"
    )


@router.get("/runs")
def list_runs(
    store: StoreDep,
    status: str | None = None,
    pipeline: str | None = None,
    failed_step: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    correlation_id: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    before: str | None = None,
) -> dict[str, Any]:
    """Runs newest first, without their steps; `next` is the cursor of the following page.

    `since` and `until` bound the creation time (ISO 8601; UTC unless it says otherwise); `correlation_id`
    keeps the runs of one chain (a run that emitted events, and the runs those started).
    """
    if status is not None and status not in {s.value for s in RunStatus}:
        raise HTTPException(422, f"status {status!r} is not one of {[s.value for s in RunStatus]}")
    store.runs.reap()  # runs whose owner is gone show interrupted
    found = store.runs.list(
        status=status, pipeline=pipeline, failed_step=failed_step, since=since, until=until,
        correlation_id=correlation_id or None, limit=limit, before=before,
    )  # fmt: skip
    return {
        "runs": [r.to_json_dict(with_steps=False) for r in found],
        "next": found[-1].id if len(found) == limit else None,
    }


def _budget(budget_usd: float | None, budget_tokens: int | None, budget_chain: bool) -> Budget | None:
    """The budget of the `budget_usd`, `budget_tokens` and `budget_chain` query parameters (a bad one is a 422
    naming it)."""
    if budget_usd is None and budget_tokens is None:
        return None
    return Budget(usd=budget_usd, tokens=budget_tokens, chain=budget_chain)


@router.post("/runs/{pipeline}", status_code=202)
async def submit_run(
    pipeline: str,
    request: Request,
    store: StoreDep,
    runtime: RuntimeDep,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    budget_chain: bool = False,
) -> JSONResponse:
    """Start a run of a pattern this server knows (imported with --import) on the body; 202 with its id.

    `?budget_usd=&budget_tokens=` give the run a budget on model spend, in place of its pattern's (with
    `budget_chain=true`, one for its whole event chain).
    """
    pattern = registered(pipeline)
    if pattern is None:
        raise HTTPException(404, f"no pattern '{pipeline}' here; start the server with --import its module")
    budget = _budget(budget_usd, budget_tokens, budget_chain)
    data = await read_json(request)
    run_id = await run_in_threadpool(pattern.submit, data, store=store, runtime=runtime, budget=budget)
    return JSONResponse({"id": run_id, "url": f"/runs/{run_id}"}, status_code=202)


@router.get("/runs/{run_id}")
def get_run(run_id: str, store: StoreDep) -> dict[str, Any]:
    """One run with every step."""
    store.runs.reap(run_id)  # a run whose owner is gone shows interrupted
    found = store.runs.get(run_id)
    shown = found.to_json_dict()
    budgets = store.budgets.for_run(found.id)
    if budgets:
        shown["budgets"] = [b.to_json_dict() for b in budgets]
    return shown


@router.post("/runs/{run_id}/resume", status_code=202)
def resume_run(
    run_id: str,
    actions: ActionsDep,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    budget_chain: bool = False,
) -> JSONResponse:
    """Continue a failed or interrupted run from its first unfinished step, in the background;
    `?budget_usd=&budget_tokens=` raise its budget (`budget_chain=true`: its event chain's), so that a run
    that failed with BudgetExceeded goes on."""
    resumed = actions.resume(run_id, budget=_budget(budget_usd, budget_tokens, budget_chain))
    return JSONResponse({"id": resumed, "url": f"/runs/{resumed}"}, status_code=202)


@router.post("/runs/{run_id}/retry", status_code=202)
def retry_run(run_id: str, body: RetryRequest, actions: ActionsDep) -> JSONResponse:
    """Run a finished run again from `from_step`: its checkpoint and the later ones are discarded."""
    retried = actions.retry(run_id, body.from_step, confirm=body.confirm, confirm_with='send "confirm": true')
    return JSONResponse({"id": retried, "url": f"/runs/{retried}"}, status_code=202)


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: str, store: StoreDep, actions: ActionsDep) -> dict[str, Any]:
    """Cancel a run: at once when idle, after its current step when running."""
    status = actions.cancel(run_id)
    return {"id": store.runs.resolve_id(run_id), "status": status.value}


@router.post("/runs/{run_id}/approve", status_code=202)
def approve_run(run_id: str, actions: ActionsDep) -> JSONResponse:
    """Approve a run awaiting approval: it goes on, in the background, at the step it waited before."""
    approved = actions.approve(run_id)
    return JSONResponse({"id": approved, "url": f"/runs/{approved}"}, status_code=202)


@router.post("/runs/{run_id}/effects/mark")
def mark_effect(run_id: str, body: MarkEffectRequest, actions: ActionsDep) -> dict[str, Any]:
    """Say whether an uncertain side effect of the run happened, and what it returned; then resume the run."""
    result = body.result if "result" in body.model_fields_set else NO_RESULT  # null is a result; absent is none
    marked = actions.settle_effect(run_id, body.key, done=body.done, result=result, given_as='"result" in the body')
    return marked.to_json_dict() if marked is not None else {"key": body.key, "status": "not_done"}


@router.post("/runs/{run_id}/reject")
def reject_run(run_id: str, actions: ActionsDep, body: RejectRequest | None = None) -> dict[str, Any]:
    """Reject a run awaiting approval: it ends cancelled, with the reason in its history."""
    return actions.reject(run_id, body.reason if body else "").to_json_dict(with_steps=False)
