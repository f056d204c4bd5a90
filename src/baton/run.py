"""`Run`: one execution of a pattern on one input, as the store records it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from baton.errors import StepFailed
from baton.status import RunStatus, StepStatus

__all__ = ["AttemptError", "ErrorInfo", "Run", "StepRecord", "Tokens"]


class ErrorInfo(BaseModel):
    """The error that ended a step: type, message and traceback."""

    type: str
    message: str
    traceback: str | None = None


class AttemptError(BaseModel):
    """A failed attempt of a step, kept even when a later attempt succeeded."""

    attempt: int
    error: ErrorInfo
    retried: bool
    started_at: datetime
    finished_at: datetime


class Tokens(BaseModel):
    """LLM tokens spent: prompt (`input`) and completion (`output`)."""

    input: int = 0
    output: int = 0


class StepRecord(BaseModel):
    """One step of a run: status, attempts, checkpointed output, error, tokens and timings."""

    name: str
    status: StepStatus
    attempts: int = 0
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    tokens: Tokens = Field(default_factory=Tokens)
    duration_ms: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt_errors: list[AttemptError] = Field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        """The documented `show --json` shape of a step."""
        return {
            "name": self.name,
            "status": self.status.value,
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error.model_dump() if self.error else None,
            "tokens": self.tokens.model_dump(),
            "duration_ms": self.duration_ms if self.duration_ms is not None else 0.0,
        }


class Run(BaseModel):
    """A run as recorded: its status, input, output and one record per step."""

    id: str
    pipeline: str
    status: RunStatus
    input: dict[str, Any]
    output: dict[str, Any] | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    target: str | None = None
    failed_step: str | None = None
    cancel_requested: bool = False
    tokens: Tokens = Field(default_factory=Tokens)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        """True when the run finished successfully."""
        return self.status is RunStatus.SUCCEEDED

    def step(self, name: str) -> StepRecord:
        """The record of the step called `name`."""
        for record in self.steps:
            if record.name == name:
                return record
        raise KeyError(f"run {self.id} has no step {name!r}; its steps: {[s.name for s in self.steps]}")

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
            "input": self.input,
            "output": self.output,
        }
        if with_steps:
            data["steps"] = [s.to_json_dict() for s in self.steps]
        return data
