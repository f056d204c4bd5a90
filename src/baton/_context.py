"""What a step's attempt gathers while it runs (its model calls), for the executor to record."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from baton._text import storable

__all__ = ["LLMCall", "StepContext", "current_step"]

log = logging.getLogger("baton.runtime")


@dataclass(slots=True)
class LLMCall:
    """One call of a model: who, how many tokens, how long, what it cost, and how it ended."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float | None
    outcome: str  # answer | invalid | tool_calls | error
    started_at: datetime
    error: str | None = None

    def __post_init__(self) -> None:
        self.error = storable(self.error)  # a provider's message may hold NUL, which PostgreSQL refuses


@dataclass(slots=True)
class StepContext:
    """The step attempt being executed in this thread (or task)."""

    run_id: str
    step: str
    idx: int
    attempt: int
    calls: list[LLMCall] = field(default_factory=list)
    # Events emitted so far: (event id, type, payload JSON), written with the checkpoint (or not at all).
    events: list[tuple[str, str, str]] = field(default_factory=list)
    # Calls kept but not yet written: each is written before the next model call, or with the attempt's end
    # (its checkpoint or its failure), so that a step's usual single call costs no write of its own.
    unwritten: list[LLMCall] = field(default_factory=list)
    # Writes calls to the store (set by the executor); `arecord` does it without blocking the loop.
    record: Callable[[list[LLMCall]], None] | None = None
    arecord: Callable[[list[LLMCall]], Awaitable[None]] | None = None
    # The run store (for `baton.effect`'s ledger) and whether the step declared side effects.
    store: Any = None
    side_effect: bool = False
    # The names of the effects this attempt performed (each name once).
    effects: set[str] = field(default_factory=set)
    # Where the attempt runs ("local", "celery"): which backend its rate limits share.
    runtime: str = "local"
    # The run's budgets (`baton.store.budgets.BudgetState`), read before its first model call.
    budgets: tuple[Any, ...] | None = None
    # The attempt's timeout, and whether it ran past it: its work, abandoned, may make no more model calls
    # and no more effects (they would belong to an attempt that already failed).
    timeout: float | None = None
    abandoned: bool = False

    def keep(self, call: LLMCall) -> None:
        """Note a call whose outcome is known; it is written before the next call, or with the attempt's end."""
        self.calls.append(call)
        self.unwritten.append(call)
        if self.abandoned:
            # Its attempt has ended: nothing else would write what this call cost.
            try:
                self.flush()
            except Exception:
                log.warning("a call of abandoned step '%s' (run %s) was not recorded", self.step, self.run_id)

    async def akeep(self, call: LLMCall) -> None:
        """`keep`, from async code (an abandoned attempt's call is written off the loop)."""
        if not self.abandoned:
            self.keep(call)
            return
        self.calls.append(call)
        self.unwritten.append(call)
        try:
            await self.aflush()
        except Exception:
            log.warning("a call of abandoned step '%s' (run %s) was not recorded", self.step, self.run_id)

    def flush(self) -> None:
        """Write the calls kept so far (before spending on another)."""
        if self.unwritten and self.record is not None:
            # Taken before writing: a call kept meanwhile (agents side by side) is written by the next flush.
            pending, self.unwritten = self.unwritten, []
            try:
                self.record(pending)
            except BaseException:
                self.unwritten[:0] = pending  # not written: the attempt's end writes them
                raise

    async def aflush(self) -> None:
        """`flush`, from async code, without blocking the loop."""
        if not (self.unwritten and self.arecord is not None):
            self.flush()
            return
        pending, self.unwritten = self.unwritten, []
        try:
            await self.arecord(pending)
        except BaseException:
            self.unwritten[:0] = pending
            raise


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar("baton_step", default=None)


def current_step() -> StepContext | None:
    """The attempt being executed here, if any."""
    return _current.get()


def enter(ctx: StepContext) -> contextvars.Token[StepContext | None]:
    """Make `ctx` the current attempt."""
    return _current.set(ctx)


def leave(token: contextvars.Token[StepContext | None]) -> None:
    """Restore the attempt that was current before."""
    _current.reset(token)
