"""What the server reads of a request's body: at most `MAX_INPUT_BYTES`, JSON within baton's limits on inputs.

The limits are `baton.limits`', the same as `baton run --input`'s: a body past the size is answered 413, JSON
nested too deep (or with a huge integer, or not UTF-8) 422, before any run starts.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from baton.limits import MAX_INPUT_BYTES, InputRefused, parse_json

__all__ = ["BodyLimit", "LimitedRoute", "read_json"]

TOO_LARGE = f"the body is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB, baton's limit on an input"


class BodyLimit:
    """ASGI middleware: a body past `MAX_INPUT_BYTES` is answered 413 without being read to its end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a declared length past the limit at once; count what arrives when none is declared."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_INPUT_BYTES:
            await JSONResponse({"detail": TOO_LARGE}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_INPUT_BYTES:
                    # An HTTPException: FastAPI lets it through its body parsing, and answers it.
                    raise HTTPException(413, TOO_LARGE)
            return message

        await self.app(scope, counted, send)


async def read_json(request: Request) -> Any:
    """The body as JSON within baton's limits (empty: null); not JSON is a 400, past a limit a 422."""
    try:
        return parse_json(await request.body() or b"null", what="the body")
    except ValueError as exc:  # JSONDecodeError
        raise HTTPException(400, f"the body is not JSON: {exc}") from None


class _LimitedRequest(Request):
    async def json(self) -> Any:
        """The body as JSON within baton's limits: what FastAPI validates a route's body model on."""
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body(), what="the body")
            except InputRefused as exc:
                # An HTTPException, which FastAPI's body parsing lets through (it makes others a 400).
                raise HTTPException(422, str(exc)) from None
        return self._json


class LimitedRoute(APIRoute):
    """A route whose JSON body is parsed within baton's limits on inputs (`router = APIRouter(route_class=...)`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, given a request whose `json()` keeps to the limits."""
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            return await handler(_LimitedRequest(request.scope, request.receive))

        return limited
