"""The dashboard: server-rendered pages over the store, to find a run, see which step failed, read why and act.

GET  /ui/runs                  runs newest first: filters, counts per status, keyset pages
GET  /ui/runs/{id}             one run: steps and lanes on a time axis, errors, checkpoints, events, actions
GET  /ui/runs/{id}/live        the changing part of the run page, polled while the run is not finished
POST /ui/runs/{id}/resume      resume (a form; answers with the run page)
POST /ui/runs/{id}/retry       retry from the step in the form's `step`
POST /ui/runs/{id}/cancel      cancel
POST /ui/runs/{id}/approve     approve a run awaiting approval; /reject (with a `reason`) stops it
POST /ui/runs/{id}/effects/mark  an uncertain side effect happened (`done=yes`, with its `result`) or not

No front-end build: Jinja templates, one stylesheet in the base template, and a few lines of script that
poll the live part of a running run (a <meta> refresh does it without script).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment

from baton._redo import latest_effects
from baton.effects import NO_RESULT
from baton.errors import BatonError, UserError
from baton.run import Run
from baton.settings import current_settings
from baton.status import RunStatus, StepStatus
from baton.store import RunStore, utcnow
from baton.store.browse import RunFilter
from baton.web.deps import ActionsDep, StoreDep, TemplatesDep
from baton.web.pages import lanes
from baton.web.problems import public_message

__all__ = ["CHAIN_ROWS", "PAGE_SIZE", "router"]

PAGE_SIZE = 50
# The runs of a chain the run page lists; the rest are a click away, on the runs page filtered by the chain.
CHAIN_ROWS = 50

router = APIRouter(include_in_schema=False)


def _pattern_kind(run: Run) -> str | None:
    """The run's pattern kind: as recorded, else from a pattern this server defines (never imported here: a
    page view must not run the pipeline's code)."""
    if run.kind is not None:
        return run.kind
    from baton.patterns.registry import registered

    pattern = registered(run.pipeline)
    return getattr(pattern, "kind", "pipeline") if pattern is not None else None


def _parse_time(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{field}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None


def _page(env: Environment, name: str, request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = env.get_template(name).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code)


@router.get("/", response_class=HTMLResponse)
def home() -> RedirectResponse:
    """The runs page."""
    return RedirectResponse("/ui/runs", status_code=307)


@router.get("/ui/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    store: StoreDep,
    env: TemplatesDep,
    status: str | None = None,
    pipeline: str | None = None,
    failed_step: str | None = None,
    since: str | None = None,
    until: str | None = None,
    correlation_id: str | None = None,
    before: str | None = None,
) -> HTMLResponse:
    """Runs newest first: filters (a chain's correlation id among them), counts per status, keyset pages."""
    if status and status not in {s.value for s in RunStatus}:
        raise HTTPException(422, f"status: {status!r} is not one of {[s.value for s in RunStatus]}")
    chosen = {
        "status": status or None,
        "pipeline": pipeline or None,
        "failed_step": failed_step or None,
        "since": _parse_time(since, "since"),
        "until": _parse_time(until, "until"),
        "correlation_id": correlation_id or None,
    }
    store.runs.reap()  # runs whose owner is gone show interrupted
    found = store.runs.list(limit=PAGE_SIZE + 1, before=before or None, **chosen)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    given = {
        "status": status, "pipeline": pipeline, "failed_step": failed_step, "since": since, "until": until,
        "correlation_id": correlation_id,
    }  # fmt: skip
    kept = {k: v for k, v in given.items() if v}
    unstatused = {k: v for k, v in kept.items() if k != "status"}
    counts = store.browse.count(RunFilter(**{k: v for k, v in chosen.items() if k != "status"}))
    pipelines, failed_steps = store.browse.facets()
    return _page(
        env,
        "runs.html",
        request,
        runs=found,
        stalled=_stalled(store, [r.id for r in found if r.runtime == "celery" and not r.status.finished]),
        counts=counts,
        total=sum(counts.values()),
        filters=kept,
        statuses=[s.value for s in RunStatus],
        pipelines=pipelines,
        failed_steps=failed_steps,
        next_url=f"/ui/runs?{urlencode(kept | {'before': found[-1].id})}" if more else None,
        first_url=f"/ui/runs?{urlencode(kept)}" if before else None,
        status_url=lambda s: "/ui/runs?" + urlencode(unstatused | ({"status": s} if s else {})),
    )


def _stalled(store: RunStore, ids: list[str]) -> set[str]:
    """Of these celery runs, those that no worker holds and nothing will move: a step's lease ran out, or the
    run sat quiet for BATON_REQUEUE_AFTER seconds with the queue empty (its message lost). The workers'
    sweepers queue them again; a run that stays so has no worker, or none that can import its pattern. A run
    queued behind others is not stalled."""
    if not ids:
        return set()
    quiet = timedelta(seconds=current_settings().worker.requeue_after) if _queue_empty() else None
    return {lost.id for lost in store.runs.lost(utcnow(), quiet=quiet, ids=ids)}


_queue_seen: list[Any] = [float("-inf"), False]


def _queue_empty() -> bool:
    """Whether baton's celery queue is known to be empty (asked at most every few seconds); False when the
    broker cannot say (or Celery is not installed here)."""
    now = time.monotonic()
    if now - _queue_seen[0] >= 5.0:
        try:
            from baton.runtime.celery._app import celery_app
            from baton.runtime.celery._sweep import queued

            empty = queued(celery_app(current_settings())) == 0
        except Exception:
            empty = False
        _queue_seen[:] = [now, empty]
    return bool(_queue_seen[1])


def _run_context(store: RunStore, run_id: str) -> dict[str, Any]:
    store.runs.reap(run_id)  # a run whose owner is gone shows interrupted
    run = store.runs.get(run_id)
    now = utcnow()
    kind = _pattern_kind(run)
    rows, span = lanes(run, kind, now)
    received = store.events.get(run.trigger_event) if run.trigger_event else None
    # Where each emitted event went: a dead letter (and why) or failed tries show beside it.
    sent = store.events.list(ids=[eid for eid, _ in run.emitted], limit=len(run.emitted)) if run.emitted else []
    effects = store.effects.list(run.id)
    chain_id = run.correlation_id or run.id
    # The emitter and every run its events started, transitively: one correlation id. Oldest first.
    chain = store.runs.list(correlation_id=chain_id, limit=CHAIN_ROWS + 1)
    return {
        "redo": latest_effects(store, run.id) if run.status.finished else [],
        "run": run,
        "budgets": store.budgets.for_run(run.id),
        "chain_id": chain_id,
        "chain": sorted(chain[:CHAIN_ROWS], key=lambda r: r.id) if len(chain) > 1 else [],
        "chain_more": len(chain) > CHAIN_ROWS,
        "chain_url": "/ui/runs?" + urlencode({"correlation_id": chain_id}),
        "lanes": rows,
        "span_ms": span,
        "kind": kind,
        "received": received,
        "effects": effects,
        "emitted": run.emitted,
        "sent": {e.id: e for e in sent},
        "live": not run.status.finished,
        "awaiting": run.status is RunStatus.AWAITING_APPROVAL,
        "run_step_waiting": next(
            (i for i, s in enumerate(run.steps) if s.status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)), None
        ),
        "stalled": run.id in _stalled(store, [run.id])
        if run.runtime == "celery" and not run.status.finished
        else False,
        "resumable": run.status.resumable,
        "retryable": run.status.finished,
    }


@router.get("/ui/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: str,
    store: StoreDep,
    env: TemplatesDep,
    done: str | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    """One run: steps and lanes on a time axis, errors, checkpoints, events, actions."""
    return _page(env, "run.html", request, done=done, problem=problem, **_run_context(store, run_id))


@router.get("/ui/runs/{run_id}/live", response_class=HTMLResponse)
def run_live(request: Request, run_id: str, store: StoreDep, env: TemplatesDep) -> HTMLResponse:
    """The changing part of the run page."""
    return _page(env, "run_live.html", request, **_run_context(store, run_id))


async def _act(store: RunStore, run_id: str, what: str, action: Callable[[], Any]) -> RedirectResponse:
    resolved = await run_in_threadpool(store.runs.resolve_id, run_id)
    try:
        await run_in_threadpool(action)
        query = {"done": what}
    except BatonError as exc:
        # Shown on the run page, which the person is looking at; nothing is lost by a refused action.
        query = {"problem": public_message(exc, store)}
    return RedirectResponse(f"/ui/runs/{resolved}?{urlencode(query)}", status_code=303)


@router.post("/ui/runs/{run_id}/resume")
async def resume_form(run_id: str, actions: ActionsDep) -> RedirectResponse:
    """Resume, then back to the run page."""
    return await _act(actions.store, run_id, "resumed", lambda: actions.resume(run_id))


@router.post("/ui/runs/{run_id}/retry")
async def retry_form(
    run_id: str, actions: ActionsDep, step: str = Form(...), confirm: str = Form("")
) -> RedirectResponse:
    """Retry from the form's `step` (side effects done again only with `confirm` ticked), then back to the run
    page."""
    ticked = confirm == "yes"
    how = 'tick "do again its side effects"'

    def retry() -> None:
        actions.retry(run_id, step, confirm=ticked, confirm_with=how)

    return await _act(actions.store, run_id, f"retried from step {step}", retry)


@router.post("/ui/runs/{run_id}/approve")
async def approve_form(run_id: str, actions: ActionsDep) -> RedirectResponse:
    """Approve, then back to the run page."""
    return await _act(actions.store, run_id, "approved", lambda: actions.approve(run_id))


@router.post("/ui/runs/{run_id}/reject")
async def reject_form(run_id: str, actions: ActionsDep, reason: str = Form("")) -> RedirectResponse:
    """Reject with the form's `reason`, then back to the run page."""
    return await _act(actions.store, run_id, "rejected", lambda: actions.reject(run_id, reason))


@router.post("/ui/runs/{run_id}/cancel")
async def cancel_form(run_id: str, actions: ActionsDep) -> RedirectResponse:
    """Cancel, then back to the run page."""
    return await _act(actions.store, run_id, "cancel requested", lambda: actions.cancel(run_id))


@router.post("/ui/runs/{run_id}/effects/mark")
async def mark_effect_form(
    run_id: str, actions: ActionsDep, key: str = Form(...), done: str = Form(...), result: str = Form("")
) -> RedirectResponse:
    """Say whether an uncertain side effect happened (`done` yes or no, with its `result` as JSON), then back."""

    if done not in ("yes", "no"):
        raise HTTPException(422, f"done: {done!r} is not 'yes' (it happened) or 'no' (it did not)")

    def settle() -> None:
        given: Any = NO_RESULT
        if result.strip():
            try:
                given = json.loads(result)
            except (ValueError, RecursionError) as exc:
                raise UserError(f"the Result field is not JSON ({exc}); nothing was recorded") from None
        actions.settle_effect(run_id, key, done=done == "yes", result=given, given_as="the Result field")

    said = "happened" if done == "yes" else "did not happen: a retry will act"
    return await _act(actions.store, run_id, f"the effect {key} {said}; resume the run", settle)
