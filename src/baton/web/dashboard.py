"""The dashboard: server-rendered pages over the store, to find a run, see which step failed, read why and act.

GET  /ui/runs                  runs newest first: filters, counts per status, keyset pages
GET  /ui/runs/{id}             one run: steps and lanes on a time axis, errors, checkpoints, events, actions
GET  /ui/runs/{id}/live        the changing part of the run page, polled while the run is not finished
POST /ui/runs/{id}/resume      resume (a form; answers with the run page)
POST /ui/runs/{id}/retry       retry from the step in the form's `step`
POST /ui/runs/{id}/cancel      cancel
POST /ui/runs/{id}/approve     approve a run awaiting approval; /reject (with a `reason`) stops it

No front-end build: Jinja templates, one stylesheet in the base template, and a few lines of script that
poll the live part of a running run (a <meta> refresh does it without script).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FunctionLoader, select_autoescape

from baton.errors import BatonError
from baton.run import Run, StepRecord
from baton.status import RunStatus, StepStatus
from baton.store import RunStore, utcnow
from baton.store.browse import RunFilter

__all__ = ["PAGE_SIZE", "dashboard_router", "templates"]

PAGE_SIZE = 50


def _template_source(name: str) -> str:
    return files("baton.web").joinpath("templates", name).read_text(encoding="utf-8")


@functools.cache
def templates() -> Environment:
    """The dashboard's Jinja environment: templates shipped in the package, HTML escaped."""
    env = Environment(loader=FunctionLoader(_template_source), autoescape=select_autoescape(default=True))
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["cost"] = _cost
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return env


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def _cost(usd: float | None) -> str:
    if usd is None:
        return "unknown"
    return f"${usd:.4f}" if usd else "$0"


@dataclass(frozen=True)
class Bar:
    """Where a step's bar sits on the run's time axis, in percent of the axis."""

    left: float
    width: float
    running: bool


@dataclass(frozen=True)
class Lane:
    """One row of the run page: a step, its bar, and its place (in a supervisor's parallel group or not)."""

    idx: int
    step: StepRecord
    bar: Bar | None
    group: str | None  # "workers" for a supervisor's workers, which run side by side


def lanes(run: Run, kind: str | None, now: datetime) -> tuple[list[Lane], float]:
    """The run's steps in order with their bars on one shared time axis, and the axis' length in ms."""
    start = run.started_at or run.created_at
    end = run.finished_at or now
    for s in run.steps:
        if s.finished_at is not None and s.finished_at > end:
            end = s.finished_at
    span = max((end - start).total_seconds() * 1000, 1.0)
    last = len(run.steps) - 1
    out = []
    for idx, s in enumerate(run.steps):
        bar = None
        if s.started_at is not None:
            finish = s.finished_at or (now if s.status is StepStatus.RUNNING else s.started_at)
            left = max((s.started_at - start).total_seconds() * 1000, 0.0) / span * 100
            width = max((finish - s.started_at).total_seconds() * 1000 / span * 100, 0.4)
            left = min(left, 99.6)
            bar = Bar(left=round(left, 2), width=round(min(width, 100 - left), 2), running=s.finished_at is None)
        group = "workers" if kind == "supervisor" and 0 < idx < last else None
        out.append(Lane(idx=idx, step=s, bar=bar, group=group))
    return out, span


def _pattern_kind(run: Run) -> str | None:
    """'supervisor' or 'pipeline': as recorded, else from a pattern this server defines (never imported here:
    a page view must not run the pipeline's code)."""
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


def dashboard_router(
    store: RunStore,
    *,
    resume: Callable[[str], str],
    retry: Callable[[str, str], str],
    cancel: Callable[[str], RunStatus],
    approve: Callable[[str], str],
    reject: Callable[[str, str], Any],
) -> APIRouter:
    """The dashboard's pages on `store`; the actions go through the same functions as the API's."""
    router = APIRouter(include_in_schema=False)
    env = templates()

    def page(name: str, request: Request, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(request=request, **context)
        return HTMLResponse(html, status_code=status_code)

    @router.get("/", response_class=HTMLResponse)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=307)

    @router.get("/ui/runs", response_class=HTMLResponse)
    def runs_page(
        request: Request,
        status: str | None = None,
        pipeline: str | None = None,
        failed_step: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: str | None = None,
    ) -> HTMLResponse:
        if status and status not in {s.value for s in RunStatus}:
            raise HTTPException(422, f"status: {status!r} is not one of {[s.value for s in RunStatus]}")
        chosen = {
            "status": status or None,
            "pipeline": pipeline or None,
            "failed_step": failed_step or None,
            "since": _parse_time(since, "since"),
            "until": _parse_time(until, "until"),
        }
        store.runs.reap()  # runs whose owner is gone show interrupted
        found = store.runs.list(limit=PAGE_SIZE + 1, before=before or None, **chosen)
        more = len(found) > PAGE_SIZE
        found = found[:PAGE_SIZE]
        given = {"status": status, "pipeline": pipeline, "failed_step": failed_step, "since": since, "until": until}
        kept = {k: v for k, v in given.items() if v}
        unstatused = {k: v for k, v in kept.items() if k != "status"}
        counts = store.browse.count(RunFilter(**{k: v for k, v in chosen.items() if k != "status"}))
        pipelines, failed_steps = store.browse.facets()
        return page(
            "runs.html",
            request,
            runs=found,
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

    def run_context(run_id: str) -> dict[str, Any]:
        store.runs.reap(run_id)  # a run whose owner is gone shows interrupted
        run = store.runs.get(run_id)
        now = utcnow()
        kind = _pattern_kind(run)
        rows, span = lanes(run, kind, now)
        received = store.events.get(run.trigger_event) if run.trigger_event else None
        effects = store.effects.list(run.id)
        return {
            "run": run,
            "lanes": rows,
            "span_ms": span,
            "kind": kind,
            "received": received,
            "effects": effects,
            "emitted": run.emitted,
            "live": not run.status.finished,
            "awaiting": run.status is RunStatus.AWAITING_APPROVAL,
            "run_step_waiting": next(
                (i for i, s in enumerate(run.steps) if s.status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)), None
            ),
            "resumable": run.status.resumable,
            "retryable": run.status.finished,
        }

    @router.get("/ui/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str, done: str | None = None, problem: str | None = None) -> HTMLResponse:
        return page("run.html", request, done=done, problem=problem, **run_context(run_id))

    @router.get("/ui/runs/{run_id}/live", response_class=HTMLResponse)
    def run_live(request: Request, run_id: str) -> HTMLResponse:
        return page("run_live.html", request, **run_context(run_id))

    async def act(run_id: str, what: str, action: Callable[[], Any]) -> RedirectResponse:
        resolved = await run_in_threadpool(store.runs.resolve_id, run_id)
        try:
            await run_in_threadpool(action)
            query = {"done": what}
        except BatonError as exc:
            # Shown on the run page, which the person is looking at; nothing is lost by a refused action.
            query = {"problem": str(exc)}
        return RedirectResponse(f"/ui/runs/{resolved}?{urlencode(query)}", status_code=303)

    @router.post("/ui/runs/{run_id}/resume")
    async def resume_form(run_id: str) -> RedirectResponse:
        return await act(run_id, "resumed", lambda: resume(run_id))

    @router.post("/ui/runs/{run_id}/retry")
    async def retry_form(run_id: str, step: str = Form(...)) -> RedirectResponse:
        return await act(run_id, f"retried from step {step}", lambda: retry(run_id, step))

    @router.post("/ui/runs/{run_id}/approve")
    async def approve_form(run_id: str) -> RedirectResponse:
        return await act(run_id, "approved", lambda: approve(run_id))

    @router.post("/ui/runs/{run_id}/reject")
    async def reject_form(run_id: str, reason: str = Form("")) -> RedirectResponse:
        return await act(run_id, "rejected", lambda: reject(run_id, reason))

    @router.post("/ui/runs/{run_id}/cancel")
    async def cancel_form(run_id: str) -> RedirectResponse:
        return await act(run_id, "cancel requested", lambda: cancel(run_id))

    return router
