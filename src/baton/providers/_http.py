"""Turning an HTTP API's failures into baton's: transient (retry, honouring Retry-After) or permanent."""

from __future__ import annotations

import os
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from baton.errors import UserError
from baton.providers.base import PermanentProviderError, ProviderError, TransientProviderError

__all__ = ["SDKClients", "classify_status", "retry_after"]

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
        api_key = os.environ.get(self.key_env) or ("not-needed" if base_url else None)
        if api_key is None:
            raise UserError(self.hint)
        key = (base_url, api_key, timeout)
        if key not in self._clients:
            self._clients[key] = self.make(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
        return self._clients[key]
