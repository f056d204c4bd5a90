"""Turning an HTTP API's failures into baton's: transient (retry, honouring Retry-After) or permanent."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from baton.errors import UserError
from baton.providers.base import PermanentProviderError, ProviderError, TransientProviderError

__all__ = ["AsyncSDKClients", "SDKClients", "classify_status", "retry_after"]

_PERMANENT_HINTS = {
    400: "bad request",
    401: "the API key is missing or wrong",
    403: "the API key may not use this model",
    404: "unknown model or endpoint",
    422: "the request was refused as invalid",
}


def retry_after(headers: Any) -> float | None:
    """Seconds the server asks to wait (Retry-After in seconds or as a date, or retry-after-ms)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def classify_status(provider: str, status: int, message: str, headers: Any = None) -> ProviderError:
    """The baton error for an HTTP status: 408, 409, 429 and 5xx are transient, other 4xx permanent."""
    if status in (408, 409, 429) or status >= 500:
        return TransientProviderError(provider, message, status=status, retry_after=retry_after(headers))
    hint = _PERMANENT_HINTS.get(status, "the request was refused")
    return PermanentProviderError(provider, f"{hint}; not retried: {message}", status=status)


def _api_key(key_env: str, hint: str, base_url: str | None) -> str:
    # A local server needs no key but the SDKs insist on one; a hosted API's comes from its usual variable.
    api_key = os.environ.get(key_env) or ("not-needed" if base_url else None)
    if api_key is None:
        raise UserError(hint)
    return api_key


class SDKClients:
    """An official SDK's clients, one per (base URL, key, timeout): the provider's settings at each call.

    A local server needs no key but the SDKs insist on one; a hosted API's key comes from its usual variable
    (the vendor's, read here) and is never stored or printed. The SDK's own retries are off: the step's Retry
    policy decides.
    """

    def __init__(self, make: Callable[..., Any], *, key_env: str, hint: str) -> None:
        self.make = make
        self.key_env, self.hint = key_env, hint
        self._clients: dict[tuple[str | None, str, float], Any] = {}

    def get(self, base_url: str | None, timeout: float) -> Any:
        """The client for `base_url` (None: the provider's own) and `timeout`."""
        api_key = _api_key(self.key_env, self.hint, base_url)
        key = (base_url, api_key, timeout)
        if key not in self._clients:
            self._clients[key] = self.make(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
        return self._clients[key]


# Hundreds of agents of one loop may wait on the API at once: no cap on connections (a capped pool would queue
# them and fail the queued ones with a pool timeout), and enough kept alive to serve such a crowd again.
MAX_CONNECTIONS: int | None = None
MAX_KEEPALIVE = 200


@dataclass(slots=True)
class _LoopClients:
    clients: dict[tuple[str | None, str, float], Any]
    closer: AsyncGenerator[None, None] | None = None


class AsyncSDKClients:
    """An official SDK's async clients, one per (base URL, key, timeout) and event loop.

    An async client's connections belong to the loop that opened them, so a client is never shared between
    loops. When a loop ends through `asyncio.run` (or any runner that shuts its async generators down), its
    clients are closed on it and forgotten; those of a loop closed otherwise are forgotten at the next call.
    The clients' pools take as many concurrent requests as the loop makes.
    """

    def __init__(self, make: Callable[..., Any], *, sdk: Any, key_env: str, hint: str) -> None:
        self.make, self.sdk = make, sdk
        self.key_env, self.hint = key_env, hint
        # Keyed by the loop itself, not weakly: a client's open connections hold their loop, so a weak key
        # would never go; entries leave when their loop shuts down (or is found closed).
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
        self._lock = threading.Lock()  # loops on several threads share the provider

    async def get(self, base_url: str | None, timeout: float) -> Any:
        """The running loop's client for `base_url` (None: the provider's own) and `timeout`."""
        api_key = _api_key(self.key_env, self.hint, base_url)
        loop = asyncio.get_running_loop()
        key = (base_url, api_key, timeout)
        with self._lock:
            for gone in [other for other in self._loops if other.is_closed()]:
                del self._loops[gone]
            entry = self._loops.get(loop)
            first = entry is None
            if entry is None:
                entry = self._loops[loop] = _LoopClients({})
            client = entry.clients.get(key)
            if client is None:
                client = entry.clients[key] = self.make(
                    base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout, http_client=self._pool()
                )
        if first:
            # A started async generator is one that the loop closes at its shutdown, while it still runs:
            # the one hook a loop offers to close what belongs to it. Held here, since the loop holds it weakly.
            entry.closer = self._close_at_shutdown(loop)
            await anext(entry.closer)
        return client

    def _pool(self) -> Any:
        # The SDK's own HTTP client (its timeouts, redirects, keep-alive socket options) with roomier limits,
        # of the SDK's own Limits class: the SDKs moved from httpx to httpx2 and refuse the other's objects.
        limits = type(self.sdk.DEFAULT_CONNECTION_LIMITS)(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE
        )
        return self.sdk.DefaultAsyncHttpxClient(limits=limits)

    def loop_count(self) -> int:
        """How many loops have clients now (they go when their loop shuts down)."""
        with self._lock:
            return len(self._loops)

    async def _close_at_shutdown(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                entry = self._loops.pop(loop, None)
            if entry is not None and not loop.is_closed():
                for client in entry.clients.values():
                    await client.close()
