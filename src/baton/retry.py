"""Retry policies: exponential backoff with jitter, for transient errors only."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from baton.errors import DefinitionError, TransientError

__all__ = ["TRANSIENT_ERRORS", "Retry", "is_transient", "register_transient"]

# The documented set of errors that are worth retrying. Providers and users extend it with
# `register_transient`, or per step with `Retry(on=...)`.
TRANSIENT_ERRORS: list[type[BaseException]] = [TransientError, ConnectionError, TimeoutError]


def register_transient(*error_types: type[BaseException]) -> None:
    """Add error types that every step treats as transient (retried under its Retry policy)."""
    for error_type in error_types:
        if not (isinstance(error_type, type) and issubclass(error_type, BaseException)):
            raise DefinitionError(f"register_transient() takes exception classes, not {error_type!r}")
        if error_type not in TRANSIENT_ERRORS:
            TRANSIENT_ERRORS.append(error_type)


def is_transient(error: BaseException, extra: tuple[type[BaseException], ...] = ()) -> bool:
    """True when `error` belongs to the transient set (or to `extra`)."""
    return isinstance(error, (*TRANSIENT_ERRORS, *extra))


@dataclass(frozen=True)
class Retry:
    """How a step retries transient errors.

    Attempt n (counting from 1) that fails transiently waits `min(max_delay, backoff * 2 ** (n - 1))` seconds
    before attempt n + 1; with `jitter`, the wait is drawn uniformly from [0, that] ("full jitter"), which keeps
    many failing runs from retrying in lock-step. `on` adds error types to the transient set for this step.
    """

    max_attempts: int = 3
    backoff: float = 0.5
    max_delay: float = 30.0
    jitter: bool = True
    on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise DefinitionError(f"Retry(max_attempts={self.max_attempts!r}): must be an int >= 1")
        if self.backoff < 0:
            raise DefinitionError(f"Retry(backoff={self.backoff!r}): must be >= 0 seconds")
        if self.max_delay < 0:
            raise DefinitionError(f"Retry(max_delay={self.max_delay!r}): must be >= 0 seconds")
        if not isinstance(self.on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.on
        ):
            raise DefinitionError(f"Retry(on={self.on!r}): must be a tuple of exception classes")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True when attempt number `attempt` failed with `error` and another attempt is allowed."""
        return attempt < self.max_attempts and is_transient(error, self.on)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_delay, self.backoff * (2 ** (attempt - 1)))
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0, ceiling)
