"""Rate limits and concurrency caps on model calls, shared by every process on the same store or broker.

Declare them in code (`baton.limit("openai:gpt-4o-mini", rpm=500, tpm=200_000, concurrent=8)`) or with
`BATON_LIMITS`; `limits_for` finds those a call obeys, and `within_limits` makes the call when they have room.
"""

from baton.ratelimits.backend import Backend, Taken
from baton.ratelimits.backends import backend_for, redis_url
from baton.ratelimits.gate import DEFAULT_RETRY_AFTER, within_limits
from baton.ratelimits.limit import Limit, clear_limits, declared_limits, fingerprint, limit, limits_for, parse_limits
from baton.ratelimits.meter import Meter, Rate, meters_for

__all__ = [
    # declaring
    "Limit",
    "clear_limits",
    "declared_limits",
    "limit",
    "parse_limits",
    # calling
    "DEFAULT_RETRY_AFTER",
    "fingerprint",
    "limits_for",
    "within_limits",
    # sharing
    "Backend",
    "Meter",
    "Rate",
    "meters_for",
    "Taken",
    "backend_for",
    "redis_url",
]
