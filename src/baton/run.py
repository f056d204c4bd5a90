"""`Run`: one execution of a pattern on one input, as the store records it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from baton._text import storable, storable_values
from baton.errors import StepFailed
from baton.status import RunStatus, StepStatus

__all__ = ["AttemptError", "CallRecord", "ErrorInfo", "Rejection", "Run", "StepRecord", "Tokens", "rejected_error"]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The error that ended a step: type, message and traceback."""

    type: str
    message: str
    traceback: str | None = None
    raw_output: str | None = None
    validation_errors: tuple[dict[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        # What is kept of an error must always be storable: a NUL in it (from a message, a traceback, a model's
        # answer) is written out as `\u0000`, which no store refuses.
        for name in ("message", "traceback", "raw_output"):
            text = getattr(self, name)
            if text is not None and "\x00" in text:
                object.__setattr__(self, name, storable(text))
        if self.validation_errors is not None:
            object.__setattr__(self, "validation_errors", tuple(storable_values(e) for e in self.validation_errors))

    def to_json_dict(self) -> dict[str, Any]:
        """As `show --json` prints it."""
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "raw_output": self.raw_output,
            "validation_errors": list(self.validation_errors) if self.validation_errors is not None else None,
        }


@dataclass(frozen=True, slots=True)
class AttemptError:
    """A failed attempt of a step, kept even when a later attempt succeeded."""

    attempt: int
    error: ErrorInfo
    retried: bool
    started_at: datetime
    finished_at: datetime

    def to_json_dict(self) -> dict[str, Any]:
        """The `show --json` shape of an earlier attempt."""
        return {
            "attempt": self.attempt,
            "error": self.error.to_json_dict(),
            "retried": self.retried,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
        }


# A person's rejection is kept in the history of the step the run waited before, as an error of this type.
_REJECTED = "Rejected"
_REJECTED_MESSAGE = "a person rejected the run before this step"


def rejected_error(why: str) -> ErrorInfo:
    """How a rejection is recorded on the step the run waited before (`why`: the reason given, or "")."""
    return ErrorInfo(type=_REJECTED, message=f"{_REJECTED_MESSAGE}: {why}" if why else _REJECTED_MESSAGE)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Who stopped a run awaiting approval, in effect: the step it waited before, the reason and when."""

    step: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Tokens:
    """LLM tokens spent: prompt (`input`) and completion (`output`)."""

    input: int = 0
    output: int = 0


NO_TOKENS = Tokens()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One recorded model call of a step."""

    attempt: int
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float | None
    outcome: str
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """As `show --json` prints it."""
        return {
            "attempt": self.attempt,
            "provider": self.provider,
            "model": self.model,
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "latency_ms": round(self.latency_ms, 3),
            "cost_usd": self.cost_usd,
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass(slots=True)
class StepRecord:
    """One step of a run: status, attempts, checkpointed output, error, tokens and timings."""

    name: str
    status: StepStatus
    attempts: int = 0
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    tokens: Tokens = NO_TOKENS
    duration_ms: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt_errors: tuple[AttemptError, ...] = ()
    cost_usd: float | None = 0.0
    boundary_tokens: int | None = None
    calls: tuple[CallRecord, ...] = ()

    def to_json_dict(self) -> dict[str, Any]:
        """The documented `show --json` shape of a step."""
        return {
            "name": self.name,
            "status": self.status.value,
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error.to_json_dict() if self.error else None,
            "tokens": {"input": self.tokens.input, "output": self.tokens.output},
            "duration_ms": self.duration_ms if self.duration_ms is not None else 0.0,
            "cost_usd": self.cost_usd,
            "boundary_tokens": self.boundary_tokens,
            "calls": [c.to_json_dict() for c in self.calls],
            "attempt_errors": [a.to_json_dict() for a in self.attempt_errors],
        }


@dataclass(slots=True)
class Run:
    """A run as recorded: its status, input, output and one record per step."""

    id: str
    pipeline: str
    status: RunStatus
    input: dict[str, Any]
    created_at: datetime
    output: dict[str, Any] | None = None
    steps: tuple[StepRecord, ...] = ()
    target: str | None = None
    failed_step: str | None = None
    cancel_requested: bool = False
    claims: int = 0
    # Where its steps execute: "local" or "celery".
    runtime: str = "local"
    # The chain of runs and events it belongs to, and the event whose delivery started it (if one did).
    correlation_id: str | None = None
    trigger_event: str | None = None
    # The events its steps emitted: (event id, type), oldest first.
    emitted: tuple[tuple[str, str], ...] = ()
    tokens: Tokens = NO_TOKENS
    # None when a model without a known price was called (see baton.register_price).
    cost_usd: float | None = 0.0
    input_boundary_tokens: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # When a person last resumed or retried it; None if never.
    resumed_at: datetime | None = None
    # The pattern's kind (`Pattern.kind`); None for runs recorded before baton kept it.
    kind: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the run finished successfully."""
        return self.status is RunStatus.SUCCEEDED

    @property
    def duration_ms(self) -> float | None:
        """How long its last go took: from its latest resume or retry (else its start) to its end; None while
        it has not ended. The time before a resume (a failed first try, a pause) is not counted twice."""
        began = self.resumed_at or self.started_at
        if began is None or self.finished_at is None:
            return None
        return max((self.finished_at - began).total_seconds() * 1000, 0.0)

    def step(self, name: str) -> StepRecord:
        """The record of the step called `name`."""
        for record in self.steps:
            if record.name == name:
                return record
        raise KeyError(f"run {self.id} has no step {name!r}; its steps: {[s.name for s in self.steps]}")

    @property
    def rejection(self) -> Rejection | None:
        """The person's rejection that ended this run (cancelled before a step awaiting approval), if one did."""
        if self.status is not RunStatus.CANCELLED:
            return None
        for record in self.steps:
            for a in reversed(record.attempt_errors):
                # One from before a person resumed or retried the run is history: this go ended otherwise.
                stale = self.resumed_at is not None and a.finished_at is not None and a.finished_at < self.resumed_at
                if a.error.type == _REJECTED and not stale:
                    reason = a.error.message.removeprefix(_REJECTED_MESSAGE).removeprefix(": ")
                    return Rejection(step=record.name, reason=reason, at=a.finished_at)
        return None

    def replace(self, **changes: Any) -> Run:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def raise_for_status(self) -> Run:
        """Raise `StepFailed` unless the run succeeded; returns the run so calls can be chained."""
        if self.status is RunStatus.SUCCEEDED:
            return self
        failed = next((s for s in self.steps if s.error is not None), None)
        if failed is not None and failed.error is not None:
            raise StepFailed(self.id, failed.name, failed.error.type, failed.error.message)
        raise StepFailed(self.id, self.failed_step or "?", self.status.value, f"the run is {self.status.value}")

    def to_json_dict(self, *, with_steps: bool = True) -> dict[str, Any]:
        """The documented `show --json` shape (`runs --json` leaves out `steps`)."""
        data: dict[str, Any] = {
            "id": self.id,
            "pipeline": self.pipeline,
            "status": self.status.value,
            "runtime": self.runtime,
            "input": self.input,
            "output": self.output,
            "tokens": {"input": self.tokens.input, "output": self.tokens.output},
            "cost_usd": self.cost_usd,
            "input_boundary_tokens": self.input_boundary_tokens,
            "correlation_id": self.correlation_id or self.id,
            "trigger_event": self.trigger_event,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "resumed_at": self.resumed_at.isoformat() if self.resumed_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_ms": self.duration_ms,
        }
        if with_steps:
            data["emitted_events"] = [{"id": i, "type": t} for i, t in self.emitted]
            data["steps"] = [s.to_json_dict() for s in self.steps]
        return data
