"""A fake OpenAI-compatible model server on 127.0.0.1, in a process of its own, for the benchmarks.

    python bench/fake_openai.py --latency S [--rpm N [--window S]] [--server auto|aiohttp|uvicorn]

It prints `port PORT KIND` once listening, then serves until killed (aiohttp if installed, else uvicorn +
starlette, with a listen backlog of 4096):

- POST /v1/chat/completions: after --latency seconds, a completion whose content is a minimal instance of the
  JSON schema in the request's `response_format` (objects with their required fields, strings, numbers and
  arrays within their bounds, enums, $ref/$defs, anyOf), with a usage block.
- With --rpm N, a rate limit: at most N x W / 60 requests admitted in any W seconds (--window, 60), counted
  as a sliding log of admissions (refused requests do not count against it). A request beyond is answered
  at once with 429, OpenAI's `rate_limit_exceeded` error, and `Retry-After`: the whole seconds (at least 1)
  until the oldest admission leaves the window and frees a slot.
- GET /stats: since the last reset, `requests` received, `answered`, `refused` (429), the most held at once
  (`peak`), and `span`, the seconds from the first request received to the last answer sent (null before).
- POST /reset: the counters back to 0 and the rate limit's window emptied.

`ModelServer` starts it from a benchmark, `FakeModel` is what it serves, `instance` the value it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKLOG = 4096


# A minimal value valid for a JSON schema.

_TEXT = (
    "the parcel arrived late and the device stops after a few minutes so the customer asks for a refund of "
    "the second charge and a replacement or their money back"
)
_WORDS = _TEXT.split()
_FORMATS = {
    "date-time": "2025-01-01T12:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00",
    "email": "customer@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def instance(schema: dict[str, Any], defs: dict[str, Any] | None = None, salt: int = 0) -> Any:
    """A small value valid for `schema`: an object's required fields, strings, numbers and arrays within
    their bounds, an enum's or a Literal's value, $ref into $defs, the first non-null choice of anyOf/oneOf.
    `salt` varies the strings and the enum values picked, so that answers are not all alike."""
    if defs is None:
        defs = schema.get("$defs") or schema.get("definitions") or {}
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, salt)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][salt % len(schema["enum"])]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            choices = [c for c in schema[key] if c.get("type") != "null"] or schema[key]
            return instance(choices[0], defs, salt)
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged |= defs[part["$ref"].rsplit("/", 1)[-1]] if "$ref" in part else part
        return instance(merged, defs, salt)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        return {name: instance(properties.get(name, {}), defs, salt + i) for i, name in enumerate(required)}
    if kind == "array":
        prefix = schema.get("prefixItems", [])
        low = max(schema.get("minItems", 0), len(prefix))
        n = min(max(low, 1), schema.get("maxItems", max(low, 1)))
        items = schema.get("items", {})
        return [instance(prefix[i] if i < len(prefix) else items, defs, salt + i) for i in range(n)]
    if kind == "string":
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        low = schema.get("minLength", 0)
        n = min(max(low, 24), schema.get("maxLength", max(low, 24)))
        words = _WORDS[salt % len(_WORDS) :] + _WORDS
        return " ".join(words * (n // len(_TEXT) + 2))[:n]
    if kind in ("integer", "number"):
        return _number(schema, salt, integer=kind == "integer")
    if kind == "boolean":
        return salt % 2 == 1
    return None


def _number(schema: dict[str, Any], salt: int, *, integer: bool) -> float | int:
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if integer:
        lo = low if low is not None else (int(above) + 1 if above is not None else None)
        hi = high if high is not None else (-int(-below) - 1 if below is not None else None)
        if lo is not None and hi is not None:
            return lo + salt % (hi - lo + 1)
        return lo if lo is not None else min(0, hi) if hi is not None else salt % 10
    lo = low if low is not None else above
    hi = high if high is not None else below
    if lo is not None and hi is not None:
        return (lo + hi) / 2  # inside both bounds, exclusive or not
    return lo + 1 if lo is not None else hi - 1 if hi is not None else 0.5


class RateLimit:
    """At most `allowed` admissions in any `window` seconds: a sliding log of the admissions' times."""

    def __init__(self, rpm: int, window: float = 60.0) -> None:
        self.allowed = max(1, round(rpm * window / 60))
        self.window = window
        self.admitted: collections.deque[float] = collections.deque()

    def admit(self, now: float) -> float | None:
        """None when a request arriving at `now` is admitted (and counted); else the seconds until a slot frees."""
        while self.admitted and self.admitted[0] <= now - self.window:
            self.admitted.popleft()
        if len(self.admitted) < self.allowed:
            self.admitted.append(now)
            return None
        return self.admitted[0] + self.window - now

    def reset(self) -> None:
        self.admitted.clear()


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeModel:
    """Answers a chat completion after `latency` seconds, or 429 beyond its rate limit; counts what it did."""

    def __init__(self, latency: float, limit: RateLimit | None = None) -> None:
        self.latency = latency
        self.limit = limit
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.requests = self.answered = self.refused = 0
        self.peak = self.in_flight
        self.first_request: float | None = None
        self.last_answer: float | None = None
        if self.limit is not None:
            self.limit.reset()

    async def reply(self, body: dict[str, Any]) -> Reply:
        self.requests += 1
        if self.first_request is None:
            self.first_request = time.monotonic()
        wait = None if self.limit is None else self.limit.admit(time.monotonic())
        if wait is not None:
            self.refused += 1
            return _rate_limited(self.limit, wait)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        self.answered += 1
        self.last_answer = time.monotonic()
        return Reply(200, self.completion(body))

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        schema = _schema_of(body.get("response_format") or {})
        content = "ok" if schema is None else json.dumps(instance(schema, salt=self.answered))
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        output = len(content) // 4 + 1
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "bench-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output},
        }

    def stats(self) -> dict[str, Any]:
        """What it did since the last reset."""
        span = None
        if self.first_request is not None and self.last_answer is not None:
            span = self.last_answer - self.first_request
        return {
            "requests": self.requests, "answered": self.answered, "refused": self.refused, "peak": self.peak,
            "span": span,
        }  # fmt: skip


def _rate_limited(limit: RateLimit, wait: float) -> Reply:
    seconds = max(1, math.ceil(wait))
    message = (
        f"Rate limit reached for requests: Limit {limit.allowed} per {limit.window:g}s, Used {limit.allowed}, "
        f"Requested 1. Please try again in {wait:.3f}s."
    )
    body = {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    return Reply(429, body, {"Retry-After": str(seconds)})


def _schema_of(response_format: dict[str, Any]) -> dict[str, Any] | None:
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["schema"]
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object"}
    return None


def _bad_request(message: str) -> Reply:
    return Reply(400, {"error": {"message": message, "type": "invalid_request_error"}})


# The server.


async def _serve_aiohttp(sock: socket.socket, model: FakeModel) -> None:
    from aiohttp import web

    async def completions(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            reply = _bad_request("the body is not JSON")
        else:
            reply = await model.reply(body)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(model.stats())

    async def reset(request: web.Request) -> web.Response:
        before = model.stats()
        model.reset()
        return web.json_response(before)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    await asyncio.Event().wait()


async def _serve_uvicorn(sock: socket.socket, model: FakeModel) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def completions(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            reply = _bad_request("the body is not JSON")
        else:
            reply = await model.reply(body)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(model.stats())

    async def reset(request: Request) -> JSONResponse:
        before = model.stats()
        model.reset()
        return JSONResponse(before)

    routes = [
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/stats", stats),
        Route("/reset", reset, methods=["POST"]),
    ]
    config = uvicorn.Config(
        Starlette(routes=routes), log_level="warning", access_log=False, backlog=BACKLOG, timeout_keep_alive=120,
        lifespan="off",
    )  # fmt: skip
    await uvicorn.Server(config).serve(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    """The server's process: print `port PORT KIND` once listening, then serve until killed."""
    parser = argparse.ArgumentParser(prog="fake_openai.py", description=__doc__)
    parser.add_argument("--latency", type=float, required=True, help="seconds before an answer")
    parser.add_argument("--rpm", type=int, default=None, help="requests admitted a minute (no limit without it)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of the sliding window the limit counts")
    parser.add_argument("--server", choices=["auto", "aiohttp", "uvicorn"], default="auto")
    args = parser.parse_args(argv)
    kind = args.server
    if kind == "auto":
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            kind = "uvicorn"
        else:
            kind = "aiohttp"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    print(f"port {sock.getsockname()[1]} {kind}", flush=True)
    model = FakeModel(args.latency, None if args.rpm is None else RateLimit(args.rpm, args.window))
    asyncio.run((_serve_aiohttp if kind == "aiohttp" else _serve_uvicorn)(sock, model))


class ModelServer:
    """The fake model's server process, seen from the benchmark."""

    def __init__(self, latency: float, kind: str = "auto", rpm: int | None = None, window: float = 60.0) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--latency", str(latency), "--server", kind]
        if rpm is not None:
            argv += ["--rpm", str(rpm), "--window", str(window)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 3 or line[0] != "port":
            self.proc.kill()
            raise RuntimeError(f"the fake model's server did not start: {line}")
        self.port, self.kind = int(line[1]), line[2]
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        return server_stats(self.url)

    def reset(self) -> dict[str, Any]:
        return server_reset(self.url)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def server_stats(url: str) -> dict[str, Any]:
    """What the server at `url` (http://127.0.0.1:PORT) did since its last reset (see `FakeModel.stats`)."""
    return _call(f"{url}/stats")


def server_reset(url: str) -> dict[str, Any]:
    """The server's counters back to 0 and its rate limit's window emptied; what it had done before."""
    return _call(f"{url}/reset", method="POST")


def _call(url: str, method: str = "GET") -> dict[str, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as response:
        return json.load(response)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
