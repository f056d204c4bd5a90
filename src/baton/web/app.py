"""The HTTP API of `baton serve`: publish events, and see where they went.

POST /events/{type}   the payload as JSON; 202 with the event's id, before any subscriber runs
GET  /events/{id}     the event, and for each subscriber the run that handles it and its status
GET  /runs/{id}       one run, as `baton show --json` prints it
"""

from __future__ import annotations

from typing import Any

from baton.errors import InvalidInput, RunNotFound, UserError
from baton.events import publish, subscribers
from baton.store import RunStore

try:
    from fastapi import Body, FastAPI, HTTPException
    from fastapi.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - exercised by the install hint in a bare venv
    raise UserError('baton serve needs FastAPI and uvicorn: pip install "baton[serve]"') from exc

__all__ = ["create_app"]


def create_app(store: RunStore, *, runtime: str = "local") -> FastAPI:
    """The API on `store`; published events are delivered on `runtime`."""
    app = FastAPI(title="baton", summary="Typed, durable multi-agent pipelines")

    @app.post("/events/{event_type}", status_code=202)
    def post_event(event_type: str, payload: dict[str, Any] = Body(...)) -> JSONResponse:  # noqa: B008
        """Publish an event: validated against its subscribers' input, answered at once with its id."""
        if not subscribers(event_type):
            raise HTTPException(404, f"nobody here subscribes to '{event_type}'")
        try:
            event_id = publish(event_type, payload, store=store, runtime=runtime)
        except InvalidInput as exc:
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

    @app.get("/runs/{run_id}")
    def get_run(run_id: str) -> dict[str, Any]:
        """One run with every step."""
        try:
            return store.get_run(run_id).to_json_dict()
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    return app
