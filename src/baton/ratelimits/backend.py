"""What a backend of shared limits does: take capacity for a call, keep its slot, give back, and hold back
every process after a 429. Backends are in `backends/` (Redis, the run store)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from baton.ratelimits.meter import Meter

__all__ = ["Backend", "Taken"]


@dataclass(frozen=True, slots=True)
class Taken:
    """What `Backend.take` found.

    Taken: the call holds its slots and its requests and tokens are reserved; it may start in `wait` seconds.
    Not taken (nothing changed): ask again in `wait` seconds; `full` when a slot is missing (then `wait` is
    when the first slot's lease runs out, and one may free sooner), else a 429 holds calls back until then.
    """

    taken: bool
    wait: float
    full: bool = False


class Backend(ABC):
    """The shared state of limits. Every method acts on all the meters of a call at once, atomically."""

    # Seconds a slot is held without renewal: a process that dies gives its slots back after this.
    lease: float

    @abstractmethod
    async def take(self, meters: Sequence[Meter], *, tokens: int, holder: str) -> Taken:
        """Take a slot for `holder` (in each meter with slots) and reserve a request and `tokens`, if no
        slot is missing and no 429 holds calls back."""

    @abstractmethod
    async def renew(self, meters: Sequence[Meter], *, holder: str) -> None:
        """Extend `holder`'s slots by a lease (a slot already lost stays lost)."""

    @abstractmethod
    async def finish(self, meters: Sequence[Meter], *, holder: str, tokens: int) -> None:
        """Free `holder`'s slots and charge `tokens` more (negative: give back what the call did not use)."""

    @abstractmethod
    async def block(self, meters: Sequence[Meter], *, seconds: float) -> None:
        """Hold back every call of these meters, in every process, for `seconds` (a 429's Retry-After)."""
