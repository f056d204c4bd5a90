"""Executing one attempt of one step: the code path every runtime shares."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ValidationError

from baton._context import StepContext, enter, leave
from baton.contracts import validate_output
from baton.errors import ContractViolation
from baton.run import ErrorInfo
from baton.steps import Step
from baton.store import RunStore, RunWriter, StepResult, utcnow
from baton.tokens import count_tokens

__all__ = ["Failed", "Observer", "Outcome", "RetryLater", "Succeeded", "error_info", "execute_attempt"]


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The step's output was validated and checkpointed."""

    value: BaseModel
    cancel_requested: bool
    result: StepResult  # holds the checkpointed JSON as `output_json`
    called_models: bool
    emitted: tuple[str, ...] = ()  # ids of the events the checkpoint wrote, for the runtime to dispatch


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A transient failure: try again after `delay` seconds (as attempt `next_attempt`)."""

    delay: float
    next_attempt: int
    error: ErrorInfo
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """The step failed for good; the step and the run are recorded failed."""

    error: ErrorInfo


Outcome = Succeeded | RetryLater | Failed


class Observer(Protocol):
    """Told what a run does as it does it (the CLI's live progress display is one)."""

    def run_created(self, run_id: str) -> None:
        """The run has its id and is about to execute."""

    def step_started(self, run_id: str, idx: int, name: str, attempt: int) -> None:
        """A step's attempt starts."""

    def step_finished(self, run_id: str, idx: int, name: str, outcome: Outcome, duration_s: float) -> None:
        """A step's attempt ended with `outcome`."""


def error_info(exc: BaseException) -> ErrorInfo:
    """Type, message and traceback of an exception (and a model's raw answer), as the store keeps them."""
    kind = type(exc)
    builtin = kind.__module__ in ("builtins",) or kind.__module__.startswith("baton.")
    name = kind.__qualname__ if builtin else f"{kind.__module__}.{kind.__qualname__}"
    raw = details = None
    if isinstance(exc, ContractViolation):
        raw, details = exc.raw_output, tuple(exc.errors)
    return ErrorInfo(
        type=name,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        raw_output=raw,
        validation_errors=details,
    )


def execute_attempt(
    store: RunStore,
    writer: RunWriter,
    run_id: str,
    owner: str,
    step: Step,
    idx: int,
    value: BaseModel,
    *,
    attempt: int,
    attempts_this_go: int,
    last: bool,
    measure: bool = False,
    end_run: bool = True,
    lease_owner: str | None = None,
) -> Outcome:
    """Run one attempt of `step` on `value`, validate its output, and record what happened.

    `attempts_this_go` counts the attempts made since the run was (re)started, which is what the step's
    Retry policy limits; `attempt` is the step's attempt number over the run's whole life. On the last
    step, the checkpoint also ends the run succeeded, in the same transaction. With `lease_owner` (the
    celery runtime), what is written is fenced on that worker still holding the step's lease.
    """
    started = utcnow()
    ctx = StepContext(run_id=run_id, step=step.name, idx=idx, attempt=attempt)
    ctx.record = lambda call: store.steps.record_calls(run_id, idx, attempt, [call])
    ctx.store = store
    ctx.side_effect = getattr(step, "side_effect", False)
    token = enter(ctx)
    try:
        try:
            produced = step.execute(value)
        except ValidationError as exc:
            # The step built a contract that breaks its bounds (`return Letter(body=...)`): that is the
            # boundary failing, and it must say so, naming the step.
            where = "output" if exc.title == step.output.__name__ else f"a {exc.title} it built"
            raise ContractViolation.from_validation_error(exc, contract=exc.title, step=step.name, where=where) from exc
        output, output_json = validate_output(step.output, produced, step=step.name)
    except Exception as exc:
        info = error_info(exc)
        retrying = step.retry.should_retry(exc, attempts_this_go)
        failed = StepResult(
            idx=idx, name=step.name, attempt=attempt, started_at=started, finished_at=utcnow(), error=info
        )
        cancel = store.steps.record_failure(
            run_id, owner, failed, retrying=retrying, recount=bool(ctx.calls), end_run=end_run, lease_owner=lease_owner
        )
        if retrying:
            # A provider that says when to come back (Retry-After) is waited for at least that long.
            delay = max(step.retry.delay(attempts_this_go), getattr(exc, "retry_after", None) or 0.0)
            return RetryLater(delay, attempt + 1, info, cancel)
        return Failed(info)
    finally:
        leave(token)
    result = StepResult(
        idx=idx, name=step.name, attempt=attempt, started_at=started, finished_at=utcnow(), output_json=output_json
    )
    cancel = writer.checkpoint(
        run_id,
        owner,
        idx=idx,
        name=step.name,
        attempt=attempt,
        output_json=output_json,
        started_at=result.started_at,
        finished_at=result.finished_at,
        final_output=output_json if last else None,
        recount=bool(ctx.calls),
        boundary_tokens=count_tokens(output_json) if measure else None,
        lease_owner=lease_owner,
        events=ctx.events,
    )
    return Succeeded(output, cancel, result, bool(ctx.calls), tuple(e[0] for e in ctx.events))
