"""How a limit is paced: GCRA (a token bucket kept as one time) with a one-second burst, slowed just enough that
a server counting "N in any 60 s" never sees more than N.

A rate of N a minute becomes one unit every `period` seconds, and up to `burst` units at once after a quiet
spell. In any window of W seconds GCRA lets through at most `burst + W / period` units, so the period is
`(60 + GUARD_SECONDS) / (N - burst + 1)`: at most N in any 61 s, which leaves a second for requests that
reach the server in another order or at other intervals than they left. The cost: `burst` of N a minute and
the guard second, about 3% of the rate (98% for N < 60, where the burst is one request).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from baton.ratelimits.limit import Limit

__all__ = ["BURST_SECONDS", "GUARD_SECONDS", "Meter", "Rate", "allowed_at", "meters_for"]

WINDOW_SECONDS = 60.0
# A second's worth at once: enough for calls that wake a little late to catch up, small enough for servers
# that also count per second.
BURST_SECONDS = 1.0
GUARD_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Rate:
    """A pace: one unit (a request, a token) every `period` seconds, `burst` units at once at most."""

    period: float
    burst: int

    @classmethod
    def per_minute(cls, allowed: int) -> Rate:
        """The pace that keeps to `allowed` units in any minute (see the module's docstring)."""
        burst = max(1, int(allowed * BURST_SECONDS // WINDOW_SECONDS))
        return cls((WINDOW_SECONDS + GUARD_SECONDS) / (allowed - burst + 1), burst)


def allowed_at(due: float, now: float, cost: int, rate: Rate) -> float:
    """When a call of `cost` units may start, given the bucket's theoretical arrival time `due` (GCRA's TAT).

    A call costing more than the burst waits for a full bucket, then goes (the bucket owes the rest), so that
    a large call is never refused for good.
    """
    return max(now, due - max(0, rate.burst - cost) * rate.period)


def next_due(due: float, start: float, cost: int, rate: Rate) -> float:
    """The bucket's theoretical arrival time once a call of `cost` units starts at `start`."""
    return max(due, start) + cost * rate.period


def due_after_block(due: float, until: float, rate: Rate) -> float:
    """The theoretical arrival time after a 429 holds calls back `until`: then paced again, with no burst."""
    return max(due, until + (rate.burst - 1) * rate.period)


@dataclass(frozen=True, slots=True)
class Meter:
    """One limit as a backend keeps it for a call: the name of its shared state and its paces."""

    name: str
    requests: Rate | None
    tokens: Rate | None
    slots: int | None


def meters_for(limits: Sequence[Limit], key: str | None) -> list[Meter]:
    """The meters of `limits` for a call made with the API key whose fingerprint is `key` (None: no key)."""
    meters = []
    for found in limits:
        name = f"{found.target}#{key}" if found.per_key and key else found.target
        requests = Rate.per_minute(found.rpm) if found.rpm else None
        tokens = Rate.per_minute(found.tpm) if found.tpm else None
        meters.append(Meter(name, requests, tokens, found.concurrent))
    return meters
