"""`baton serve`: the HTTP API (JSON, OpenAPI at /openapi.json) and the dashboard (see `baton.web.dashboard`).

POST /events/{type}          the payload as JSON; 202 with the event's id, before any subscriber runs
GET  /events/{id}            the event, and for each subscriber the run that handles it and its status
GET  /runs                   runs newest first: status, pipeline, failed_step, since, until; `next` cursor
POST /runs/{pattern}         start a run of a pattern the server imported; 202 with its id
GET  /runs/{id}              one run, as `baton show --json` prints it
POST /runs/{id}/resume       continue a failed or interrupted run (202)
POST /runs/{id}/retry        run again from a step: {"from_step": "summarise"} (202)
POST /runs/{id}/cancel       cancel
POST /runs/{id}/effects/mark an uncertain side effect happened or not: {"key": "...", "done": true, "result": {...}}

Who may call what is `baton.web.access`'s business: read it before exposing a server.
The routes are module-level routers (`baton.web.routes`, `baton.web.dashboard`); what they work on (the store,
the runtime, the access, the templates) is the app's state, which their dependencies (`baton.web.deps`) read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from baton.errors import (
    BatonError,
    BrokerUnavailable,
    ContractViolation,
    RunNotFound,
    RunNotQueued,
    RunNotResumable,
    StoreUnavailable,
    UserError,
)
from baton.events import dispatch
from baton.settings import current_settings
from baton.store import RunStore
from baton.store.trouble import is_store_trouble
from baton.web.access import Access
from baton.web.bodies import BodyLimit
from baton.web.dashboard import router as dashboard_router
from baton.web.pages import templates
from baton.web.problems import http_problem, public_message, validation_problem
from baton.web.routes import events_router, login_router, runs_router
from baton.web.routes.runs import RejectRequest, RetryRequest

__all__ = ["RejectRequest", "RetryRequest", "create_app"]

log = logging.getLogger("baton.web")


# How often the server hands over events that a crashed process left in the outbox.
SWEEP_SECONDS = 15.0

# Reachable without signing in: the sign-in itself.
OPEN_PATHS = frozenset({"/login"})


def create_app(store: RunStore, *, runtime: str = "local", sweep: bool = True, access: Access | None = None) -> FastAPI:
    """The API and the dashboard on `store`; published events are delivered on `runtime`.

    With `sweep`, the server hands over what the outbox holds when it starts (events a crash left behind,
    its own included), then, every 15 s, events older than that. `access` says who may do what (default:
    from BATON_DASHBOARD_TOKEN; without it, reading is open and a token made here guards every change).
    """
    app = FastAPI(title="baton", summary="Typed, durable multi-agent pipelines", lifespan=_lifespan)
    app.state.store = store
    app.state.runtime = runtime
    app.state.sweep = sweep
    app.state.access = access or Access.from_setting(current_settings().server.dashboard_token)
    app.state.templates = templates()
    # Inside the guard (added first): a body is counted only for who may send it, and a body past the limit
    # is answered from within the app, not through the guard's own reading of the request.
    app.add_middleware(BodyLimit)
    app.exception_handler(RequestValidationError)(validation_problem)  # without echoing large inputs
    app.middleware("http")(_guard)
    app.exception_handler(BatonError)(_baton_error)
    app.exception_handler(StarletteHTTPException)(http_problem)
    # The store's errors, wrapped by SQLAlchemy or raised by the driver on the connections baton keeps.
    for kind in _driver_errors():
        app.exception_handler(kind)(_store_error)
    # The order of the API's routes is the order of its OpenAPI document.
    for router in (events_router, runs_router, dashboard_router, login_router):
        app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    stop = threading.Event()
    adopted = True
    if app.state.sweep and app.state.runtime != "celery":
        # Before the first request: nothing else may call these runs interrupted and leave them so first.
        adopted = await asyncio.to_thread(_adopt, app.state.store)
    if app.state.sweep:
        args = (app.state.store, app.state.runtime, stop, adopted)
        threading.Thread(target=_sweeper, args=args, name="baton-outbox", daemon=True).start()
    yield
    stop.set()


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    if "\x00" in request.scope.get("path", "") or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        # No id, name or filter holds NUL; PostgreSQL could not even look one up.
        return JSONResponse({"detail": "the request's path or query holds a NUL character"}, status_code=422)
    access: Access = request.app.state.access
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


# While the store is down, a client is told to come back (how soon, in seconds), never shown a 500.
RETRY_AFTER_SECONDS = 5


async def _store_error(request: Request, exc: Exception) -> Response:
    if is_store_trouble(exc):
        return _unavailable(request)
    log.error("the store refused a request's query", exc_info=exc)
    if _refused_value(exc):
        return _problem(request, "a value in the request cannot be stored or looked up", 422)
    return _problem(request, "the server could not answer: see its log", 500)


def _refused_value(exc: Exception) -> bool:
    original = getattr(exc, "orig", None) or exc
    return type(original).__name__ == "DataError" or type(exc).__name__ == "DataError"


def _driver_errors() -> list[type[Exception]]:
    import sqlite3

    kinds: list[type[Exception]] = [DBAPIError, sqlite3.Error]
    try:
        import psycopg
    except ImportError:
        return kinds
    return [*kinds, psycopg.Error]


def _unavailable(request: Request) -> Response:
    # Says nothing of where the store is: its URL, user and host are the operator's, not the client's.
    why = "the run store cannot be reached right now; nothing was changed. Try again shortly"
    response = _problem(request, why, 503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _problem(request: Request, detail: str, status: int) -> Response:
    if _wants_page(request):
        html = request.app.state.templates.get_template("problem.html").render(request=request, problem=detail)
        return HTMLResponse(html, status_code=status)
    return JSONResponse({"detail": detail}, status_code=status)


async def _baton_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BatonError)  # registered for BatonError only
    if isinstance(exc, StoreUnavailable):
        return _unavailable(request)
    # The user's mistakes are 4xx with what was wrong (the field, for a contract); never a 500.
    status = 404 if isinstance(exc, RunNotFound) else 409 if isinstance(exc, RunNotResumable) else 422
    if not isinstance(exc, UserError | ContractViolation):
        status = 500
    problem = public_message(exc, request.app.state.store)
    if isinstance(exc, RunNotQueued) and not _wants_page(request):
        # Accepted: the run is recorded, and the sweeper queues it once the broker answers. A client that sent
        # it again on an error would start a second run.
        body = {"id": exc.run_id, "url": f"/runs/{exc.run_id}", "queued": False, "detail": problem}
        return JSONResponse(body, status_code=202)
    if isinstance(exc, BrokerUnavailable):
        response = _problem(request, problem, 503)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if _wants_page(request):
        return _problem(request, problem, status)
    body: dict[str, Any] = {"detail": problem, "type": type(exc).__name__}
    if isinstance(exc, ContractViolation):
        body["errors"] = exc.errors
    return JSONResponse(body, status_code=status)


def _wants_page(request: Request) -> bool:
    return request.url.path == "/" or request.url.path.startswith("/ui/")


def _sweeper(store: RunStore, runtime: str, stop: threading.Event, adopted: bool = True) -> None:
    older_than: float | None = None  # the first sweep takes everything: nothing of this process is in flight

    def outbox() -> None:
        nonlocal older_than
        dispatch(store, runtime, older_than_s=older_than)
        older_than = SWEEP_SECONDS

    if runtime == "celery":
        # On the celery runtime the server also queues lost runs again, as every worker does.
        from baton.runtime.celery._app import celery_app
        from baton.runtime.celery._sweep import Sweeper

        settings = current_settings()
        try:
            outbox()
        except Exception:
            log.warning("could not sweep the event outbox", exc_info=True)
        Sweeper(celery_app(settings), store, settings).forever(stop, also=outbox, also_every=SWEEP_SECONDS)
        return
    while True:
        if not adopted:  # the store was down when the server started
            adopted = _adopt(store)
        try:
            outbox()
        except Exception:  # the next sweep tries again
            log.warning("could not sweep the event outbox", exc_info=True)
        if stop.wait(SWEEP_SECONDS):
            return


def _adopt(store: RunStore) -> bool:
    """On start, resume the local runs whose process died mid-run (a server killed and started again): those
    still marked running, whose pattern this server can import. A run stopped on purpose (Ctrl-C, cancel)
    was marked when it stopped, and is left as it is."""
    from baton.api import resume_later

    try:
        orphans = store.runs.reap()
    except Exception as exc:
        log.warning("could not look for runs whose process died (%s); trying again", exc)
        return False
    for run_id in orphans:
        try:
            if store.runs.get(run_id).runtime != "local":
                continue
            resume_later(run_id, store=store)
        except Exception as exc:
            log.warning("run %s: its process died; not resumed here (%s)", run_id, exc)
            continue
        log.warning("run %s: its process died mid-run; resumed here", run_id)
    return True
