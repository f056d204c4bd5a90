"""The Pipeline pattern: each step's output is the next step's input."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from baton._ids import new_run_id
from baton._owner import this_owner
from baton.contracts import validate_input
from baton.errors import DefinitionError, RunNotResumable
from baton.patterns.registry import register
from baton.run import Run
from baton.runtime import get_runtime
from baton.runtime.executor import Observer
from baton.runtime.local import plan_resume
from baton.status import RunStatus
from baton.steps import Step
from baton.store import RunStore, open_store

__all__ = ["Pipeline"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")


class Pipeline:
    """A chain of steps: `Pipeline("billing", [add_up, write_letter])`.

    Checked when built: every item is a step, names are unique, and each step's output contract is the
    next step's input contract.
    """

    def __init__(self, name: str, steps: Sequence[Step], *, target: str | None = None) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise DefinitionError(
                f"Pipeline name {name!r} is not valid: letters, digits, '_', '-' or '.', at most 200 characters"
            )
        if isinstance(steps, Step) or not isinstance(steps, Sequence) or not steps:
            raise DefinitionError(f"Pipeline '{name}' needs a non-empty list of steps")
        for position, item in enumerate(steps):
            if not isinstance(item, Step):
                hint = " (did you forget @step?)" if callable(item) else ""
                raise DefinitionError(
                    f"Pipeline '{name}': item {position} is {item!r}, not a step{hint}"
                )
        seen: set[str] = set()
        for item in steps:
            if item.name in seen:
                raise DefinitionError(
                    f"Pipeline '{name}': two steps are named '{item.name}'; step names must be unique"
                )
            seen.add(item.name)
        for before, after in zip(steps, steps[1:], strict=False):
            if not issubclass(before.output, after.input):
                raise DefinitionError(
                    f"Pipeline '{name}': step '{before.name}' returns {before.output.__name__}, but the next "
                    f"step '{after.name}' takes {after.input.__name__}"
                )
        self.name = name
        self.steps: tuple[Step, ...] = tuple(steps)
        self._target = target
        self._module = sys._getframe(1).f_globals.get("__name__")
        register(self)

    @property
    def input(self) -> type[BaseModel]:
        """The contract of the pipeline's input: its first step's input."""
        return self.steps[0].input

    @property
    def output(self) -> type[BaseModel]:
        """The contract of the pipeline's output: its last step's output."""
        return self.steps[-1].output

    @property
    def step_names(self) -> list[str]:
        """The names of the steps, in order."""
        return [s.name for s in self.steps]

    @property
    def target(self) -> str | None:
        """How another process imports this pipeline ("pkg.mod:name" or "/abs/file.py:name"), if known."""
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
    ) -> Run:
        """Run the pipeline to the end on `input` and return the recorded Run (check `.status`)."""
        store = _store(store)
        run_id, value = self._create(store, input, owner=this_owner())
        if observer is not None and hasattr(observer, "run_created"):
            observer.run_created(run_id)
        return get_runtime(runtime).start(store, run_id, self.steps, value, observer=observer)

    def submit(
        self, input: BaseModel | dict[str, Any] | str, *, store: RunStore | str | None = None, runtime: str = "local"
    ) -> str:
        """Start the pipeline on `input` and return the run id at once."""
        store = _store(store)
        run_id, value = self._create(store, input, owner=None)
        rt = get_runtime(runtime)

        def go() -> Run:
            return self._resume_in(store, run_id, rt, observer=None)

        rt.submit(go, run_id)
        return run_id

    def resume(
        self,
        run_id: str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
        observer: Observer | None = None,
    ) -> Run:
        """Continue a failed or interrupted run at its first unfinished step; finished steps are replayed."""
        store = _store(store)
        return self._resume_in(store, store.resolve_id(run_id), get_runtime(runtime), observer=observer)

    def _resume_in(self, store: RunStore, run_id: str, rt: Any, observer: Observer | None) -> Run:
        run = store.get_run(run_id)
        if run.pipeline != self.name:
            raise RunNotResumable(f"run {run.id} belongs to pipeline '{run.pipeline}', not '{self.name}'")
        idx, value, attempt, replace = plan_resume(store, run, self.steps)
        statuses = [RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.PENDING]
        if not store.claim(run.id, this_owner(), start_idx=idx, attempt=attempt, statuses=statuses):
            raise RunNotResumable(f"run {run.id} was taken by another process while resuming; try again")
        if observer is not None and hasattr(observer, "run_created"):
            observer.run_created(run.id)
        return rt.start(
            store, run.id, self.steps, value,
            start_idx=idx, first_attempt=attempt, replace_first=replace, observer=observer,
        )  # fmt: skip

    def _create(self, store: RunStore, input: Any, *, owner: str | None) -> tuple[str, BaseModel]:
        value = validate_input(self.input, input, step=self.steps[0].name)
        run_id = new_run_id()
        store.create_run(
            run_id=run_id,
            pipeline=self.name,
            target=self.target,
            input_json=value.model_dump_json(),
            step_names=self.step_names,
            owner=owner,
        )
        return run_id, value

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}: {' -> '.join(self.step_names)}>"


def _store(store: RunStore | str | None) -> RunStore:
    if isinstance(store, RunStore):
        return store
    return open_store(store)


def _find_target(pattern: Pipeline) -> str | None:
    module = sys.modules.get(pattern._module or "")
    if module is None:
        return None
    for attr, value in vars(module).items():
        if value is pattern:
            if pattern._module == "__main__" or pattern._module.startswith("baton_user_"):
                path = getattr(module, "__file__", None)
                return f"{Path(path).resolve()}:{attr}" if path else None
            return f"{pattern._module}:{attr}"
    return None
