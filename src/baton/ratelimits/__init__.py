"""Rate limits and concurrency caps on model calls, shared by every process on the same store or broker.

Declare them in code (`baton.limit("openai:gpt-4o-mini", rpm=500, tpm=200_000, concurrent=8)`) or with
`BATON_LIMITS`; `limits_for` finds those a call obeys.
"""

from baton.ratelimits.limit import Limit, clear_limits, declared_limits, fingerprint, limit, limits_for, parse_limits

__all__ = [
    # declaring
    "Limit",
    "clear_limits",
    "declared_limits",
    "limit",
    "parse_limits",
    # calling
    "fingerprint",
    "limits_for",
]
