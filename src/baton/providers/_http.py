"""Turning an HTTP API's failures into baton's: transient (retry, honouring Retry-After) or permanent."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

from baton.providers.base import PermanentProviderError, ProviderError, TransientProviderError

__all__ = ["classify_status", "retry_after"]

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
