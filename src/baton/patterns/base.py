"""What every pattern shares: its contracts, its recorded step names, and how it is run and resumed."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from baton.budgets import Budget, check_budget, rebudget
from baton.contracts import validate_input, validate_json
from baton.patterns.plan import Done, Fail, Next, RunSteps, States, Wait
from baton.patterns.registry import register
from baton.run import Run
from baton.runtime import get_runtime
from baton.runtime.base import Observer, wait_for
from baton.status import StepStatus
from baton.steps import Step
from baton.store import RunStore, open_store

__all__ = ["NAME", "Pattern"]

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")


class Pattern:
    """A named arrangement of steps; the first step takes the input, the last one gives the output.

    A pattern owns how it runs: `plan` says, from a run's step states, what may run next; `reads` and
    `input_of` say where each step's input comes from; `final` which checkpoint ends the run; `rerun_from`
    what a retry from a step discards. Runtimes interpret that and never ask what kind of pattern they hold.
    A subclass defines `plan` and `reads`; the rest follows.
    """

    kind = "pipeline"
    name: str
    steps: tuple[Step, ...]

    def __init_subclass__(cls, **options: Any) -> None:
        super().__init_subclass__(**options)
        _kinds[cls.kind] = cls

    @classmethod
    def branches(cls, steps: int) -> frozenset[int]:
        """Which of the `steps` steps of a run of this kind run as parallel branches (the dashboard draws
        them side by side); the pattern's code is not needed, only its kind and its run's step count."""
        return frozenset()

    # What a run's model calls may spend (`baton.Budget`); `submit(..., budget=)` overrides it for one run.
    budget: Budget | None = None

    # How many parallel branches one process runs at once (each holds a database connection).
    max_parallel: int = 8

    def _register(self, target: str | None, module: str | None) -> None:
        self._target = target
        self._module = module
        # What each step reads never changes: asked once here, not on every step of every run.
        self._reads = readers = [self.reads(i) for i in range(len(self.steps))]
        model = [s.calls_model for s in self.steps]
        # A boundary's tokens are worth counting where a model writes or reads its JSON.
        self.measured = frozenset(
            i
            for i in range(len(self.steps))
            if model[i] or any(model[j] and i in readers[j] for j in range(len(model)))
        )
        self.measure_input = any(model[j] and not readers[j] for j in range(len(model)))
        register(self)

    def plan(self, states: States) -> Next:
        """What may run next, given the run's step states (see `baton.patterns.plan`)."""
        raise NotImplementedError

    def reads(self, idx: int) -> tuple[int, ...]:
        """The steps whose checkpoints step `idx`'s input is made of; () for the run's own input."""
        raise NotImplementedError

    def input_of(self, idx: int, states: States) -> BaseModel:
        """Step `idx`'s validated input, from the run's input or the checkpoints it reads."""
        step = self.steps[idx]
        sources = self._reads[idx]
        if not sources:
            return states.run_input(step.input, step.name)
        (source,) = sources  # a step reading several checkpoints builds its input in its pattern's override
        before = self.steps[source]
        value = states.output(source, before.output, before.name)
        if isinstance(value, step.input):
            return value  # the pattern checked, when built, that the output contract is the input's
        raw = states.steps[source].output_json or value.model_dump_json()
        return validate_json(step.input, raw, step=step.name, where="input (checkpoint)")

    def follows(self, idx: int) -> Next | None:
        """What follows step `idx`'s success when the pattern can tell without reading the run's states
        (a chain's next step); None when the plan must see them."""
        return None

    def final(self, idx: int) -> bool:
        """Whether step `idx`'s checkpoint ends the run succeeded (in the same transaction)."""
        return idx == len(self.steps) - 1

    def first(self, states: States) -> int:
        """The step a run starts (or goes on) at, as the run records it while it runs."""
        nxt = self.plan(states)
        return nxt.steps[0] if isinstance(nxt, RunSteps) and nxt.steps else 0

    @property
    def input(self) -> type[BaseModel]:
        """The contract of the input: the first step's."""
        return self.steps[0].input

    @property
    def output(self) -> type[BaseModel]:
        """The contract of the output: the last step's."""
        return self.steps[-1].output

    @property
    def step_names(self) -> list[str]:
        """The names of the steps, in the order they are recorded."""
        return [s.name for s in self.steps]

    @property
    def target(self) -> str | None:
        """How another process imports this pattern ("pkg.mod:name" or "/abs/file.py:name"), if known."""
        if self._target is None:
            self._target = _find_target(self)
        return self._target

    @target.setter
    def target(self, value: str | None) -> None:
        self._target = value

    def run(
        self,
        input: BaseModel | dict[str, Any] | str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
        observer: Observer | None = None,
        budget: Budget | None = None,
    ) -> Run:
        """Run to the end on `input` and return the recorded Run (check `.status`); `budget` overrides the
        pattern's for this run."""
        value = validate_input(self.input, input, step=self.steps[0].name)
        return get_runtime(runtime).run(store_of(store), self, value, observer, **_budget(self, budget))

    def submit(
        self,
        input: BaseModel | dict[str, Any] | str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
        budget: Budget | None = None,
    ) -> str:
        """Start on `input` and return the run id at once; `budget` overrides the pattern's for this run."""
        value = validate_input(self.input, input, step=self.steps[0].name)
        return get_runtime(runtime).submit(store_of(store), self, value, **_budget(self, budget))

    async def arun(
        self,
        input: BaseModel | dict[str, Any] | str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
        observer: Observer | None = None,
        budget: Budget | None = None,
    ) -> Run:
        """`run` for async code: on the local runtime the run executes on the running loop (its async steps
        awaited there, its sync steps on threads); on celery it is awaited in the store."""
        value = validate_input(self.input, input, step=self.steps[0].name)
        return await get_runtime(runtime).arun(store_of(store), self, value, observer, **_budget(self, budget))

    async def asubmit(
        self,
        input: BaseModel | dict[str, Any] | str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
        budget: Budget | None = None,
    ) -> str:
        """`submit` for async code: start on `input` and return the run id at once (`baton.await_run` waits)."""
        value = validate_input(self.input, input, step=self.steps[0].name)
        run_id = await get_runtime(runtime).asubmit(store_of(store), self, value, **_budget(self, budget))
        assert run_id is not None
        return run_id

    def resume(
        self,
        run_id: str,
        *,
        store: RunStore | str | None = None,
        runtime: str | None = None,
        observer: Observer | None = None,
        budget: Budget | None = None,
    ) -> Run:
        """Continue a failed or interrupted run (on its own runtime unless `runtime` says) and wait until it
        stops again; what succeeded is replayed from its checkpoints, not re-run. `budget` replaces its budget
        (a run that failed with `BudgetExceeded` goes on with a larger one)."""
        s = store_of(store)
        run_id = s.runs.resolve_id(run_id)
        recorded = s.runs.get(run_id)
        where = runtime or recorded.runtime
        rebudget(s, recorded, budget, f"resume of run {run_id}")
        return wait_for(s, get_runtime(where).resume(s, self, run_id, observer))

    def retry(
        self,
        run_id: str,
        from_step: str,
        *,
        store: RunStore | str | None = None,
        runtime: str | None = None,
        observer: Observer | None = None,
        budget: Budget | None = None,
    ) -> str:
        """Run a finished run again from `from_step`: its checkpoint and those after it are discarded and the
        steps re-run in the background (on the run's own runtime unless `runtime` says); returns the run id.
        `observer` hears of the steps as they go, as a resume's does; `budget` replaces the run's budget.
        """
        s = store_of(store)
        run_id = s.runs.resolve_id(run_id)
        recorded = s.runs.get(run_id)
        where = runtime or recorded.runtime
        rebudget(s, recorded, budget, f"retry of run {run_id}")
        if observer is None:  # a runtime from a plugin, written before observers, still retries
            return get_runtime(where).retry_from(s, self, run_id, from_step)
        return get_runtime(where).retry_from(s, self, run_id, from_step, observer=observer)

    def rerun_from(self, idx: int) -> list[int]:
        """The steps that run again when a run is retried from step `idx`, that one first: it and those after."""
        return list(range(idx, len(self.steps)))


def _budget(pattern: Pattern, budget: object) -> dict[str, Any]:
    """The `budget=` to hand a runtime: only when given, so that a runtime written before budgets still runs
    patterns that declare none."""
    checked = check_budget(budget, f"run of '{pattern.name}'")
    return {} if checked is None else {"budget": checked}


def next_in_chain(states: States, idxs: range) -> Next | None:
    """The plan of steps that run one after the other: the first unfinished one, or None when all are done."""
    for idx in idxs:
        if states.done(idx):
            continue
        if states.failed(idx):
            return Fail(idx)
        if states.status(idx) is StepStatus.RUNNING:
            return Wait()  # its worker checkpoints it, or its message comes back to whoever takes it over
        return RunSteps((idx,))
    return None


def fan_out(states: States, chosen: list[int], others: range, then: int) -> Next:
    """The plan of parallel branches: the `chosen` ones run together (the `others` are skipped), and when
    every one of them succeeded, step `then` joins them."""
    skip = tuple(i for i in others if i not in chosen and not states.done(i))
    pending = states.open(chosen)
    if states.in_flight(pending):
        return Wait()
    failed = [i for i in pending if states.failed(i)]
    if failed:
        return Fail(failed[0])
    if pending:
        return RunSteps(tuple(pending), skip=skip, branches=True)
    return next_in_chain(states, range(then, then + 1)) or Done()


_kinds: dict[str, type[Pattern]] = {}


def parallel_steps(kind: str | None, steps: int) -> frozenset[int]:
    """The steps of a recorded run (of pattern `kind`, with `steps` steps) that ran as parallel branches;
    none for a kind this process does not define."""
    found = _kinds.get(kind or Pattern.kind)
    return found.branches(steps) if found is not None else frozenset()


def store_of(store: RunStore | str | None) -> RunStore:
    """The store given, or the one at a URL, or the default one."""
    return store if isinstance(store, RunStore) else open_store(store)


def _find_target(pattern: Pattern) -> str | None:
    module = sys.modules.get(pattern._module or "")
    if module is None:
        return None
    # A subscriber made of one step (see `baton.on`) is found through that step: importing its module
    # subscribes it again, under the same name.
    wanted = getattr(pattern, "stands_for", None) or pattern
    for attr, value in vars(module).items():
        if value is wanted:
            if pattern._module == "__main__" or (pattern._module or "").startswith("baton_user_"):
                path = getattr(module, "__file__", None)
                return f"{Path(path).resolve()}:{attr}" if path else None
            return f"{pattern._module}:{attr}"
    return None
