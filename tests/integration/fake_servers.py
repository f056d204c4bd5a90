"""Small HTTP servers on loopback that speak a provider's API, for the tests of the real SDKs.

Each answers from a queue of scripted replies and keeps the requests it received; it can take its time over
each, and counts the most requests it had in flight at once (to prove that clients wait on it concurrently).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    # Many clients connect at once: the default backlog of 5 would drop their connections and make them retry.
    request_queue_size = 256
    daemon_threads = True


class ScriptedHTTPServer:
    """Serves `replies` in order, one per POST: (status, headers, JSON body); the last one repeats.

    Each reply is sent `delay` seconds after its request came; `max_in_flight` is the most requests it was
    serving at once.
    """

    def __init__(self, replies: list[tuple[int, dict[str, str], Any]], *, delay: float = 0.0) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.delay = delay
        self.in_flight = self.max_in_flight = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sent = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                request = {"path": self.path, "headers": dict(self.headers), "body": sent}
                with lock:
                    outer.requests.append(request)
                    number = len(outer.requests)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    time.sleep(outer.delay)
                finally:
                    with lock:
                        outer.in_flight -= 1
                status, headers, body = outer.replies[min(number - 1, len(outer.replies) - 1)]
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ScriptedHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def openai_reply(content: str, model: str = "gpt-4o-mini") -> tuple[int, dict[str, str], Any]:
    """A chat completion as the OpenAI API returns it."""
    return (
        200,
        {},
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
        },
    )


def anthropic_reply(
    tool: str, answer: dict[str, Any], model: str = "claude-3-5-haiku-latest"
) -> tuple[int, dict[str, str], Any]:
    """A message whose content is one call of `tool`, as the Messages API returns it."""
    return (
        200,
        {},
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "content": [{"type": "tool_use", "id": "toolu_1", "name": tool, "input": answer}],
            "usage": {"input_tokens": 30, "output_tokens": 12},
        },
    )


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """An API error body with `status`."""
    return status, headers or {}, {"error": {"type": "error", "message": message}}
