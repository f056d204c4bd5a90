"""What a client is told when something goes wrong: what it can act on, never the server's internals.

A user's mistake is told as it is; any other error only by its kind (the server's log has the rest). No
answer names the store's URL, user, host or database, and a 422 never echoes a large input back.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from baton._urls import mask_url
from baton.errors import BrokerUnavailable, ContractViolation, RunNotQueued, UserError
from baton.store import RunStore

__all__ = ["MAX_ECHO_CHARS", "http_problem", "public_message", "short", "validation_problem"]

log = logging.getLogger("baton.web")

# The JSON of a refused value longer than this is not sent back: the client has it, and it may be huge.
MAX_ECHO_CHARS = 200


_LONG = re.compile(rf"\S{{{MAX_ECHO_CHARS},}}")


def short(text: str) -> str:
    """`text` with any word longer than MAX_ECHO_CHARS (a value the client sent, echoed) cut to its start."""
    return _LONG.sub(lambda m: f"{m.group()[:40]}... ({len(m.group())} characters)", text)


async def http_problem(request: Request, exc: Exception) -> JSONResponse:
    """An HTTP error a route raised (a 404, a filter's 422), its detail without huge echoed values."""
    assert isinstance(exc, HTTPException)  # registered for it only
    detail = short(exc.detail) if isinstance(exc.detail, str) else exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def public_message(exc: BaseException, store: RunStore) -> str:
    """What a client may read of `exc`: a user's mistake as it is (the store's URL taken out, huge values it
    echoes cut), else its kind."""
    if isinstance(exc, UserError | ContractViolation):
        return short(_without_store(str(exc), store))
    if isinstance(exc, BrokerUnavailable):
        # Where the broker is and why it refused are the operator's (the log has them), not the client's.
        log.warning("%s", exc)
        if isinstance(exc, RunNotQueued):
            return (
                f"run {exc.run_id} is recorded but not queued: the broker cannot be reached right now; it is "
                "queued once the broker answers again (or resume it then)"
            )
        return "the broker cannot be reached right now; nothing was recorded or changed. Try again shortly"
    log.error("answered a request with a server error", exc_info=exc)
    return f"{type(exc).__name__}: the server could not do this; its log says why"


def _without_store(text: str, store: RunStore) -> str:
    # Baton's own messages do not name the store; a user's mistake that quotes it (a setting, a path) must not
    # carry it to a client either.
    url = str(store.url)
    for shown in {url, mask_url(url), store.engine.url.render_as_string(hide_password=True)}:
        if shown:
            text = text.replace(shown, "the store")
    return text


async def validation_problem(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a request that does not fit its route, without the inputs too large to echo."""
    assert isinstance(exc, RequestValidationError)  # registered for it only
    errors = []
    for error in exc.errors():
        error = dict(error)
        if "input" in error and _too_long(error["input"]):
            del error["input"]
        errors.append(error)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _too_long(value: Any) -> bool:
    try:
        return len(json.dumps(jsonable_encoder(value))) > MAX_ECHO_CHARS
    except (TypeError, ValueError, RecursionError):
        return True
