"""`baton serve`: the HTTP API (JSON, OpenAPI at /openapi.json) and the dashboard (see `baton.web.dashboard`).

POST /events/{type}          the payload as JSON; 202 with the event's id, before any subscriber runs
GET  /events/{id}            the event, and for each subscriber the run that handles it and its status
GET  /runs                   runs newest first: status, pipeline, failed_step, since, until; `next` cursor
POST /runs/{pattern}         start a run of a pattern the server imported; 202 with its id
GET  /runs/{id}              one run, as `baton show --json` prints it
POST /runs/{id}/resume       continue a failed or interrupted run (202)
POST /runs/{id}/retry        run again from a step: {"from_step": "summarise"} (202)
POST /runs/{id}/cancel       cancel

Who may call what is `baton.web.access`'s business: read it before exposing a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, Field

from baton import api
from baton.errors import BatonError, ContractViolation, InvalidInput, RunNotFound, RunNotResumable, UserError
from baton.events import dispatch, publish, subscribers
from baton.patterns.registry import find_pattern, registered
from baton.run import Run
from baton.runtime import get_runtime
from baton.status import RunStatus
from baton.store import RunStore

try:
    from fastapi import FastAPI, Form, HTTPException, Query, Request, Response
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

    from baton.web.access import COOKIE, Access
    from baton.web.dashboard import dashboard_router, templates
except ImportError as exc:  # pragma: no cover - exercised by the install hint in a bare venv
    raise UserError('baton serve needs FastAPI and uvicorn: pip install "baton[serve]"') from exc

__all__ = ["RetryRequest", "create_app"]

log = logging.getLogger("baton.web")


# How often the server hands over events that a crashed process left in the outbox.
SWEEP_SECONDS = 15.0


def create_app(store: RunStore, *, runtime: str = "local", sweep: bool = True, access: Access | None = None) -> FastAPI:
    """The API and the dashboard on `store`; published events are delivered on `runtime`.

    With `sweep`, the server hands over what the outbox holds when it starts (events a crash left behind,
    its own included), then, every 15 s, events older than that. `access` says who may do what (default:
    from BATON_DASHBOARD_TOKEN; without it, reading is open and a token made here guards every change).
    """
    if access is None:
        access = Access.from_setting(os.environ.get("BATON_DASHBOARD_TOKEN"))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        if sweep:
            threading.Thread(target=_sweeper, args=(store, runtime, stop), name="baton-outbox", daemon=True).start()
        yield
        stop.set()

    app = FastAPI(title="baton", summary="Typed, durable multi-agent pipelines", lifespan=lifespan)
    app.state.access = access

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if access.foreign_host(request):
            why = "without BATON_DASHBOARD_TOKEN this server answers to localhost, 127.0.0.1 and [::1] only"
            return JSONResponse({"detail": why}, status_code=403)
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        refused = access.decide(request)
        if refused is None:
            return await call_next(request)
        if _wants_page(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method.upper() != "GET":
                target = request.headers.get("referer") or "/ui/runs"
            return RedirectResponse("/login?" + urlencode({"next": target, "why": refused}), status_code=303)
        return JSONResponse({"detail": refused}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.post("/events/{event_type}", status_code=202)
    async def post_event(event_type: str, request: Request) -> JSONResponse:
        """Publish an event: validated against its subscribers' input, answered at once with its id.

        The body is read as JSON whatever its content type says (`curl -d` sends a form's).
        """
        if not subscribers(event_type):
            raise HTTPException(404, f"nobody here subscribes to '{event_type}'")
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise HTTPException(422, "the body must be a JSON object: the event's payload")
        return await run_in_threadpool(_publish, event_type, payload)

    def _publish(event_type: str, payload: dict[str, Any]) -> JSONResponse:
        try:
            event_id = publish(event_type, payload, store=store, runtime=runtime)
        except (InvalidInput, ContractViolation) as exc:  # the first subscriber's input, or another's
            return JSONResponse({"detail": str(exc), "errors": exc.errors}, status_code=422)
        except UserError as exc:
            raise HTTPException(422, str(exc)) from None
        return JSONResponse({"id": event_id, "type": event_type, "url": f"/events/{event_id}"}, status_code=202)

    @app.get("/events/{event_id}")
    def get_event(event_id: str) -> dict[str, Any]:
        """An event and where it went: each subscriber's run and its status."""
        event = store.events.get(event_id)
        if event is None:
            raise HTTPException(404, f"no event {event_id}")
        return event.to_json_dict()

    @app.exception_handler(BatonError)
    async def baton_error(request: Request, exc: BatonError) -> Response:
        # The user's mistakes are 4xx with what was wrong (the field, for a contract); never a 500.
        status = 404 if isinstance(exc, RunNotFound) else 409 if isinstance(exc, RunNotResumable) else 422
        if not isinstance(exc, UserError | ContractViolation):
            status = 500
        if _wants_page(request):
            html = templates().get_template("problem.html").render(request=request, problem=str(exc))
            return HTMLResponse(html, status_code=status)
        body: dict[str, Any] = {"detail": str(exc), "type": type(exc).__name__}
        if isinstance(exc, ContractViolation):
            body["errors"] = exc.errors
        return JSONResponse(body, status_code=status)

    @app.get("/runs")
    def list_runs(
        status: str | None = None,
        pipeline: str | None = None,
        failed_step: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = Query(50, ge=1, le=1000),
        before: str | None = None,
    ) -> dict[str, Any]:
        """Runs newest first, without their steps; `next` is the cursor of the following page.

        `since` and `until` bound the creation time (ISO 8601; UTC unless it says otherwise).
        """
        if status is not None and status not in {s.value for s in RunStatus}:
            raise HTTPException(422, f"status {status!r} is not one of {[s.value for s in RunStatus]}")
        store.runs.reap()  # runs whose owner is gone show interrupted
        found = store.runs.list(
            status=status, pipeline=pipeline, failed_step=failed_step, since=since, until=until,
            limit=limit, before=before,
        )  # fmt: skip
        return {
            "runs": [r.to_json_dict(with_steps=False) for r in found],
            "next": found[-1].id if len(found) == limit else None,
        }

    @app.post("/runs/{pipeline}", status_code=202)
    async def submit_run(pipeline: str, request: Request) -> JSONResponse:
        """Start a run of a pattern this server knows (imported with --import) on the body; 202 with its id."""
        pattern = registered(pipeline)
        if pattern is None:
            raise HTTPException(404, f"no pattern '{pipeline}' here; start the server with --import its module")
        try:
            data = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None
        run_id = await run_in_threadpool(pattern.submit, data, store=store, runtime=runtime)
        return JSONResponse({"id": run_id, "url": f"/runs/{run_id}"}, status_code=202)

    @app.get("/runs/{run_id}")
    def get_run(run_id: str) -> dict[str, Any]:
        """One run with every step."""
        store.runs.reap(run_id)  # a run whose owner is gone shows interrupted
        return store.runs.get(run_id).to_json_dict()

    @app.post("/runs/{run_id}/resume", status_code=202)
    def resume_run(run_id: str) -> JSONResponse:
        """Continue a failed or interrupted run from its first unfinished step, in the background."""
        resumed = resume(run_id)
        return JSONResponse({"id": resumed, "url": f"/runs/{resumed}"}, status_code=202)

    @app.post("/runs/{run_id}/retry", status_code=202)
    def retry_run(run_id: str, body: RetryRequest) -> JSONResponse:
        """Run a finished run again from `from_step`: its checkpoint and the later ones are discarded."""
        retried = retry(run_id, body.from_step)
        return JSONResponse({"id": retried, "url": f"/runs/{retried}"}, status_code=202)

    @app.post("/runs/{run_id}/cancel")
    def cancel_run(run_id: str) -> dict[str, Any]:
        """Cancel a run: at once when idle, after its current step when running."""
        status = store.runs.cancel(run_id)
        return {"id": store.runs.resolve_id(run_id), "status": status.value}

    @app.post("/runs/{run_id}/approve", status_code=202)
    def approve_run(run_id: str) -> JSONResponse:
        """Approve a run awaiting approval: it goes on, in the background, at the step it waited before."""
        approved = approve(run_id)
        return JSONResponse({"id": approved, "url": f"/runs/{approved}"}, status_code=202)

    @app.post("/runs/{run_id}/reject")
    def reject_run(run_id: str, body: RejectRequest | None = None) -> dict[str, Any]:
        """Reject a run awaiting approval: it ends cancelled, with the reason in its history."""
        return reject(run_id, body.reason if body else "").to_json_dict(with_steps=False)

    def approve(run_id: str) -> str:
        return api.approve(run_id, store=store)

    def reject(run_id: str, reason: str) -> Run:
        return api.reject(run_id, reason=reason, store=store)

    def resume(run_id: str) -> str:
        store.runs.reap(run_id)  # a run whose owner is gone is interrupted, so resumable
        recorded = store.runs.get(run_id)
        pattern = find_pattern(recorded.pipeline, recorded.target)
        if recorded.runtime == "local":
            # Pending at once (a run that cannot resume answers 409), then continued in the background.
            return get_runtime("local").resume_later(store, pattern, recorded.id)
        return pattern.resume(recorded.id, store=store, runtime=recorded.runtime).id

    def retry(run_id: str, from_step: str) -> str:
        store.runs.reap(run_id)  # a run whose owner is gone has stopped, so it may be retried
        recorded = store.runs.get(run_id)
        pattern = find_pattern(recorded.pipeline, recorded.target)
        return pattern.retry(recorded.id, from_step, store=store, runtime=recorded.runtime)

    app.include_router(
        dashboard_router(store, resume=resume, retry=retry, cancel=store.runs.cancel, approve=approve, reject=reject)
    )

    @app.get("/login", include_in_schema=False, response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/ui/runs", why: str | None = None) -> Response:
        return _login(request, next, why)

    @app.post("/login", include_in_schema=False, response_class=HTMLResponse)
    def login(request: Request, token: str = Form(""), next: str = Form("/ui/runs")) -> Response:
        return _signed_in(access, token, next) or _login(request, next, "that token is not the dashboard token", 401)

    @app.post("/logout", include_in_schema=False)
    def logout() -> RedirectResponse:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    return app


class RejectRequest(BaseModel):
    """The body of POST /runs/{id}/reject."""

    reason: str = Field(default="", max_length=500, description="Why: kept in the run's history")


class RetryRequest(BaseModel):
    """The body of POST /runs/{id}/retry."""

    from_step: str = Field(min_length=1, max_length=100, description="The step to run again, with the ones after it")


# Reachable without signing in: the sign-in itself.
OPEN_PATHS = frozenset({"/login"})


def _wants_page(request: Request) -> bool:
    return request.url.path == "/" or request.url.path.startswith("/ui/")


def _safe_next(target: str) -> str:
    # Only a path of this server: a sign-in link must not send the browser elsewhere.
    return target if target.startswith("/") and not target.startswith("//") else "/ui/runs"


def _signed_in(access: Access, token: str, target: str) -> RedirectResponse | None:
    if not access.check_token(token.strip()):
        return None
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(COOKIE, access.session, httponly=True, samesite="strict", path="/")
    return response


def _login(request: Request, target: str, why: str | None, status_code: int = 200) -> HTMLResponse:
    html = templates().get_template("login.html").render(request=request, next=_safe_next(target), why=why)
    return HTMLResponse(html, status_code=status_code)


def _sweeper(store: RunStore, runtime: str, stop: threading.Event) -> None:
    older_than: float | None = None  # the first sweep takes everything: nothing of this process is in flight
    while True:
        try:
            dispatch(store, runtime, older_than_s=older_than)
        except Exception:  # the next sweep tries again
            log.warning("could not sweep the event outbox", exc_info=True)
        older_than = SWEEP_SECONDS
        if stop.wait(SWEEP_SECONDS):
            return
