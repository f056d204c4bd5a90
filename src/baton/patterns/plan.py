"""What a pattern tells a runtime: from a run's recorded step states, what may run next.

A runtime never asks what kind of pattern it holds. It keeps a `States` of the run (what it read from the
store, and what it has just done), asks `pattern.plan(states)` for the next node, and interprets it:

- `RunSteps(steps, skip)`: run these steps now (in parallel when there are several), after recording the
  `skip`ped ones as skipped; `branches` says their failures are the plan's to judge, not the run's end;
- `Wait()`: steps are still in flight elsewhere; whoever finishes the last of them asks again;
- `Done()`: every step that had to run succeeded (the final step's checkpoint ended the run);
- `Fail(step)`: the run fails, naming that step.

The pattern also builds each step's input from the states (`Pattern.input_of`), says which step's
checkpoint ends the run (`Pattern.final`), what a resume runs again and what a retry from a step discards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from baton.contracts import validate_json
from baton.errors import RunNotResumable, UserError
from baton.status import RunStatus, StepStatus

__all__ = ["Done", "Fail", "Next", "RunSteps", "StepView", "States", "Wait", "rewind_plan", "resume_states"]

_DONE = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


@dataclass(frozen=True, slots=True)
class RunSteps:
    """Run these steps now; several at once are parallel branches."""

    steps: tuple[int, ...]
    skip: tuple[int, ...] = ()
    # Parallel branches end on their own: a failed one does not end the run, the next plan says what does.
    branches: bool = False


@dataclass(frozen=True, slots=True)
class Wait:
    """Steps are still in flight; the one that ends last asks for the plan again."""


@dataclass(frozen=True, slots=True)
class Done:
    """Every step that had to run has succeeded."""


@dataclass(frozen=True, slots=True)
class Fail:
    """The run fails at `step`."""

    step: int


Next = RunSteps | Wait | Done | Fail


@dataclass(slots=True)
class StepView:
    """What a plan sees of one step: its status, its attempts so far, and its checkpoint."""

    status: StepStatus
    attempts: int = 0
    output_json: str | None = None
    # The validated checkpoint, when this process holds it already (it just ran the step, or read it).
    value: BaseModel | None = None


@dataclass(slots=True)
class States:
    """The recorded states of a run's steps, by index, and the run's own input.

    A step absent from the map has not started (or its earlier attempts were given back by a resume).
    """

    steps: dict[int, StepView] = field(default_factory=dict)
    # The attempts of steps that run again (a resumed run's), which their next attempts follow.
    prior: dict[int, int] = field(default_factory=dict)
    input_json: str | None = None
    input_value: BaseModel | None = None

    def status(self, idx: int) -> StepStatus | None:
        """The status of step `idx`, None when it has not started."""
        view = self.steps.get(idx)
        return view.status if view is not None else None

    def done(self, idx: int) -> bool:
        """Whether step `idx` succeeded or was skipped."""
        return self.status(idx) in _DONE

    def failed(self, idx: int) -> bool:
        """Whether step `idx` failed for good."""
        return self.status(idx) is StepStatus.FAILED

    def open(self, idxs: Iterable[int]) -> list[int]:
        """Those of `idxs` that have not succeeded (nor been skipped)."""
        return [i for i in idxs if not self.done(i)]

    def in_flight(self, idxs: Iterable[int]) -> list[int]:
        """Those of `idxs` running, or waiting in a queue for their next attempt, elsewhere (a resume's
        states leave out what runs again, so there a pending step is one that has not started)."""
        return [i for i in idxs if self.status(i) in (StepStatus.RUNNING, StepStatus.PENDING)]

    def attempts(self, idx: int) -> int:
        """The attempts step `idx` made so far."""
        view = self.steps.get(idx)
        return view.attempts if view is not None else self.prior.get(idx, 0)

    def succeeded(self, idx: int, value: BaseModel, output_json: str | None, attempts: int) -> None:
        """Note that step `idx` succeeded with `value` (checkpointed as `output_json`)."""
        self.steps[idx] = StepView(StepStatus.SUCCEEDED, attempts, output_json, value)

    def ended(self, idx: int, status: StepStatus, attempts: int) -> None:
        """Note that step `idx` ended with `status` (failed, skipped) after `attempts` attempts."""
        self.steps[idx] = StepView(status, attempts)

    def output(self, idx: int, contract: type[BaseModel], step: str) -> BaseModel:
        """Step `idx`'s checkpoint, validated against `contract` (once; kept for the next asker)."""
        view = self.steps.get(idx)
        if view is None or view.status is not StepStatus.SUCCEEDED:
            raise Stale(f"step '{step}' has no checkpoint")
        if view.value is None:
            if view.output_json is None:
                raise Stale(f"step '{step}' has no checkpoint")
            view.value = validate_json(contract, view.output_json, step=step, where="checkpoint")
        return view.value

    def run_input(self, contract: type[BaseModel], step: str) -> BaseModel:
        """The run's input, validated against the first step's `contract`."""
        if self.input_value is None:
            assert self.input_json is not None, "the run's input was not read"
            self.input_value = validate_json(contract, self.input_json, step=step, where="recorded run input")
        return self.input_value

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps)


class Stale(RunNotResumable):
    """A step's input is not in the store: the message that asked for it predates a retry from an earlier
    step, which sent the run's messages again. It is dropped."""


def _check_names(run: object, pattern: object, verb: str) -> None:
    recorded = [s.name for s in run.steps]  # type: ignore[attr-defined]
    current = list(pattern.step_names)  # type: ignore[attr-defined]
    if recorded != current:
        raise RunNotResumable(
            f"run {run.id} cannot {verb}: it recorded steps {recorded}, but pipeline '{run.pipeline}' now has "  # type: ignore[attr-defined]
            f"{current}. Its code changed; start a new run instead."
        )


def resume_states(run: object, pattern: object, *, pending_ok: bool = False) -> States:
    """The states a resume of `run` plans from: what succeeded or was skipped is kept, the rest runs again
    (with its attempts counting on). Refuses a run that cannot resume, saying why."""
    _check_names(run, pattern, "resume")
    status = run.status  # type: ignore[attr-defined]
    rid = run.id  # type: ignore[attr-defined]
    if status is RunStatus.SUCCEEDED:
        raise RunNotResumable(f"run {rid} already succeeded; there is nothing to resume")
    if status is RunStatus.CANCELLED:
        raise RunNotResumable(f"run {rid} was cancelled; start a new run instead")
    if status is RunStatus.AWAITING_APPROVAL:
        raise RunNotResumable(f"run {rid} is awaiting approval: baton approve {rid} (or reject it)")
    if status is RunStatus.RUNNING:
        raise RunNotResumable(f"run {rid} is running in another process; cancel it first or wait")
    if status is RunStatus.PENDING and not pending_ok:
        raise RunNotResumable(f"run {rid} is pending: the process that submitted it will start it")
    return recorded_states(run)


def recorded_states(run: object) -> States:
    """The States a recorded run goes on from: what succeeded or was skipped; the steps that did not are
    left out (they run again), keeping only their attempt counts."""
    states = States(input_json=json.dumps(run.input))  # type: ignore[attr-defined]
    for idx, record in enumerate(run.steps):  # type: ignore[attr-defined]
        if record.status in _DONE:
            raw = json.dumps(record.output) if record.status is StepStatus.SUCCEEDED else None
            states.steps[idx] = StepView(record.status, record.attempts, raw)
        elif record.attempts:
            # It runs again: absent for the plan, but its attempts go on from where they were.
            states.prior[idx] = record.attempts
    return states


def rewind_plan(run: object, pattern: object, step: str) -> list[int]:
    """The steps to run again when `run` is retried from `step`, that one first; refuses what cannot be."""
    _check_names(run, pattern, "be retried")
    recorded = [s.name for s in run.steps]  # type: ignore[attr-defined]
    rid = run.id  # type: ignore[attr-defined]
    if step not in recorded:
        raise UserError(f"run {rid} has no step {step!r}; its steps are {recorded}")
    status = run.status  # type: ignore[attr-defined]
    if not status.finished:
        raise RunNotResumable(f"run {rid} is {status.value}; cancel it or wait for it to end, then retry")
    idx = recorded.index(step)
    if run.steps[idx].status is StepStatus.SKIPPED:  # type: ignore[attr-defined]
        raise RunNotResumable(
            f"step '{step}' of run {rid} was skipped (not routed to); retry from the router to route again"
        )
    return pattern.rerun_from(idx)  # type: ignore[attr-defined]
