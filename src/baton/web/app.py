"""The HTTP API of `baton serve`: publish events, and see where they went.

POST /events/{type}   the payload as JSON; 202 with the event's id, before any subscriber runs
GET  /events/{id}     the event, and for each subscriber the run that handles it and its status
GET  /runs/{id}       one run, as `baton show --json` prints it
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from baton.errors import BatonError, ContractViolation, InvalidInput, RunNotFound, RunNotResumable, UserError
from baton.events import dispatch, publish, subscribers
from baton.patterns.registry import find_pattern, registered
from baton.runtime import get_runtime
from baton.status import RunStatus
from baton.store import RunStore

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - exercised by the install hint in a bare venv
    raise UserError('baton serve needs FastAPI and uvicorn: pip install "baton[serve]"') from exc

__all__ = ["create_app"]

log = logging.getLogger("baton.web")


# How often the server hands over events that a crashed process left in the outbox.
SWEEP_SECONDS = 15.0


def create_app(store: RunStore, *, runtime: str = "local", sweep: bool = True) -> FastAPI:
    """The API on `store`; published events are delivered on `runtime`.

    With `sweep`, the server hands over what the outbox holds when it starts (events a crash left behind,
    its own included), then, every 15 s, events older than that.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        if sweep:
            threading.Thread(target=_sweeper, args=(store, runtime, stop), name="baton-outbox", daemon=True).start()
        yield
        stop.set()

    app = FastAPI(title="baton", summary="Typed, durable multi-agent pipelines", lifespan=lifespan)

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
        event = store.get_event(event_id)
        if event is None:
            raise HTTPException(404, f"no event {event_id}")
        return event.to_json_dict()

    @app.exception_handler(BatonError)
    async def baton_error(_request: Request, exc: BatonError) -> JSONResponse:
        # The user's mistakes are 4xx with what was wrong (the field, for a contract); never a 500.
        status = 404 if isinstance(exc, RunNotFound) else 409 if isinstance(exc, RunNotResumable) else 422
        if not isinstance(exc, UserError | ContractViolation):
            status = 500
        body: dict[str, Any] = {"detail": str(exc), "type": type(exc).__name__}
        if isinstance(exc, ContractViolation):
            body["errors"] = exc.errors
        return JSONResponse(body, status_code=status)

    @app.get("/runs")
    def list_runs(
        status: str | None = None, pipeline: str | None = None, limit: int = 50, before: str | None = None
    ) -> dict[str, Any]:
        """Runs newest first, without their steps; `next` is the cursor of the following page."""
        if status is not None and status not in {s.value for s in RunStatus}:
            raise HTTPException(422, f"status {status!r} is not one of {[s.value for s in RunStatus]}")
        if not 1 <= limit <= 1000:
            raise HTTPException(422, "limit must be between 1 and 1000")
        found = store.list_runs(status=status, pipeline=pipeline, limit=limit, before=before)
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
        return store.get_run(run_id).to_json_dict()

    @app.post("/runs/{run_id}/resume", status_code=202)
    def resume_run(run_id: str) -> JSONResponse:
        """Continue a failed or interrupted run from its first unfinished step, in the background."""
        recorded = store.get_run(run_id)
        pattern = find_pattern(recorded.pipeline, recorded.target)
        where = recorded.runtime
        if where == "local":
            # Pending at once (a run that cannot resume answers 409), then continued in the background.
            get_runtime("local").resume_later(store, pattern, recorded.id)
        else:
            pattern.resume(recorded.id, store=store, runtime=where)
        return JSONResponse({"id": recorded.id, "url": f"/runs/{recorded.id}"}, status_code=202)

    @app.post("/runs/{run_id}/cancel")
    def cancel_run(run_id: str) -> dict[str, Any]:
        """Cancel a run: at once when idle, after its current step when running."""
        status = store.request_cancel(run_id)
        return {"id": store.resolve_id(run_id), "status": status.value}

    return app


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
