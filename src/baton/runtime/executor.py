"""Executing one attempt of one step: the code path every runtime shares.

An `Attempt` is one value; `execute` runs it, validates the output at the boundary, and writes the
checkpoint (with the events the step emitted) or the failure. Hooks (`baton.runtime.base.hooks`) are told
what was emitted and may wrap the work (a span, a budget); the runtime decides what comes next.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, replace

from pydantic import BaseModel, ValidationError

from baton._context import StepContext, enter, leave
from baton.contracts import validate_output
from baton.errors import ContractViolation
from baton.run import ErrorInfo
from baton.runtime.base import hooks
from baton.steps import Step
from baton.store import RunStore, RunWriter, StepResult, utcnow
from baton.tokens import count_tokens

__all__ = ["Attempt", "Failed", "Outcome", "RetryLater", "Succeeded", "error_info", "execute"]


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


@dataclass(slots=True)
class Attempt:
    """One attempt of one step of one run: everything the executor needs, as one value."""

    run_id: str
    step: Step
    idx: int
    value: BaseModel  # the step's validated input
    number: int  # the step's attempt number over the run's whole life
    this_go: int  # the attempts since the run was (re)started: what the step's Retry limits
    owner: str  # who holds the run (a process, or CELERY_OWNER for a celery run's steps)
    runtime: str
    final: bool = False  # its checkpoint ends the run succeeded, in the same transaction
    measure: bool = False  # count the tokens of its output's JSON (a model writes or reads it)
    ends_run: bool = True  # a failure ends the run (a parallel branch's is judged by the plan instead)
    lease_owner: str | None = None  # the worker holding the step's lease, which fences every write

    def next(self, number: int) -> Attempt:
        """The attempt after this one, numbered `number`."""
        return replace(self, number=number, this_go=self.this_go + 1)


def execute(store: RunStore, writer: RunWriter, attempt: Attempt) -> Outcome:
    """Run `attempt`, validate its output, and record what happened (a checkpoint, or the failure).

    Emitted events are written with the checkpoint and reported through `hooks` (see `baton.runtime.base`).
    """
    step, idx, run_id = attempt.step, attempt.idx, attempt.run_id
    started = utcnow()
    ctx = StepContext(run_id=run_id, step=step.name, idx=idx, attempt=attempt.number)
    ctx.record = lambda call: store.steps.record_calls(run_id, idx, attempt.number, [call])
    ctx.store = store
    ctx.side_effect = step.side_effect
    token = enter(ctx)
    try:
        try:
            if hooks.wrapping:
                with contextlib.ExitStack() as around:
                    for wrapper in hooks.wrappers(attempt):
                        around.enter_context(wrapper)
                    produced = step.execute(attempt.value)
            else:  # the hot path: nothing wraps an attempt unless a hook asked to
                produced = step.execute(attempt.value)
        except ValidationError as exc:
            # The step built a contract that breaks its bounds (`return Letter(body=...)`): that is the
            # boundary failing, and it must say so, naming the step.
            where = "output" if exc.title == step.output.__name__ else f"a {exc.title} it built"
            raise ContractViolation.from_validation_error(exc, contract=exc.title, step=step.name, where=where) from exc
        output, output_json = validate_output(step.output, produced, step=step.name)
    except Exception as exc:
        info = error_info(exc)
        retrying = step.retry.should_retry(exc, attempt.this_go)
        failed = StepResult(
            idx=idx, name=step.name, attempt=attempt.number, started_at=started, finished_at=utcnow(), error=info
        )
        cancel = store.steps.record_failure(
            run_id, attempt.owner, failed, retrying=retrying, recount=bool(ctx.calls), end_run=attempt.ends_run,
            lease_owner=attempt.lease_owner,
        )  # fmt: skip
        if retrying:
            # A provider that says when to come back (Retry-After) is waited for at least that long.
            delay = max(step.retry.delay(attempt.this_go), getattr(exc, "retry_after", None) or 0.0)
            return RetryLater(delay, attempt.number + 1, info, cancel)
        return Failed(info)
    finally:
        leave(token)
    result = StepResult(
        idx=idx, name=step.name, attempt=attempt.number, started_at=started, finished_at=utcnow(),
        output_json=output_json,
    )  # fmt: skip
    cancel = writer.checkpoint(
        run_id,
        attempt.owner,
        idx=idx,
        name=step.name,
        attempt=attempt.number,
        output_json=output_json,
        started_at=result.started_at,
        finished_at=result.finished_at,
        final_output=output_json if attempt.final else None,
        recount=bool(ctx.calls),
        boundary_tokens=count_tokens(output_json) if attempt.measure else None,
        lease_owner=attempt.lease_owner,
        events=ctx.events,
    )
    emitted = tuple(e[0] for e in ctx.events)
    if emitted:
        hooks.emitted(store, attempt.runtime, emitted)
    return Succeeded(output, cancel, result, bool(ctx.calls), emitted)
