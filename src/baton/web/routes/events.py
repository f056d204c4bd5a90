"""POST /events/{type} publishes an event; GET /events/{id} shows where it went."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from baton.errors import ContractViolation, InvalidInput, UserError
from baton.events import publish, subscribers
from baton.store import RunStore
from baton.web.bodies import LimitedRoute, read_json
from baton.web.deps import RuntimeDep, StoreDep

__all__ = ["router"]

router = APIRouter(route_class=LimitedRoute)


@router.post("/events/{event_type}", status_code=202)
async def post_event(event_type: str, request: Request, store: StoreDep, runtime: RuntimeDep) -> JSONResponse:
    """Publish an event: validated against its subscribers' input, answered at once with its id.

    The body is read as JSON whatever its content type says (`curl -d` sends a form's).
    """
    if not subscribers(event_type):
        raise HTTPException(404, f"nobody here subscribes to '{event_type}'")
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise HTTPException(422, "the body must be a JSON object: the event's payload")
    return await run_in_threadpool(_publish, store, runtime, event_type, payload)


def _publish(store: RunStore, runtime: str, event_type: str, payload: dict[str, Any]) -> JSONResponse:
    try:
        event_id = publish(event_type, payload, store=store, runtime=runtime)
    except (InvalidInput, ContractViolation) as exc:  # the first subscriber's input, or another's
        return JSONResponse({"detail": str(exc), "errors": exc.errors}, status_code=422)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from None
    return JSONResponse({"id": event_id, "type": event_type, "url": f"/events/{event_id}"}, status_code=202)


@router.get("/events/{event_id}")
def get_event(event_id: str, store: StoreDep) -> dict[str, Any]:
    """An event and where it went: each subscriber's run and its status."""
    event = store.events.get(event_id)
    if event is None:
        raise HTTPException(404, f"no event {event_id}")
    return event.to_json_dict()
