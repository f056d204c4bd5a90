"""The Pipeline pattern: each step's output is the next step's input."""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from baton.contracts import validate_input
from baton.errors import DefinitionError
from baton.patterns.registry import register
from baton.run import Run
from baton.runtime import get_runtime
from baton.runtime.executor import Observer
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
                raise DefinitionError(f"Pipeline '{name}': item {position} is {item!r}, not a step{hint}")
        seen: set[str] = set()
        for item in steps:
            if item.name in seen:
                raise DefinitionError(
                    f"Pipeline '{name}': two steps are named '{item.name}'; step names must be unique"
                )
            seen.add(item.name)
        for before, after in itertools.pairwise(steps):
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
        value = validate_input(self.input, input, step=self.steps[0].name)
        return get_runtime(runtime).run(_store(store), self, value, observer)

    def submit(
        self,
        input: BaseModel | dict[str, Any] | str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
    ) -> str:
        """Start the pipeline on `input` and return the run id at once."""
        value = validate_input(self.input, input, step=self.steps[0].name)
        return get_runtime(runtime).submit(_store(store), self, value)

    def resume(
        self,
        run_id: str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
        observer: Observer | None = None,
    ) -> Run:
        """Continue a failed or interrupted run at its first unfinished step; finished steps are replayed."""
        s = _store(store)
        return get_runtime(runtime).resume(s, self, s.resolve_id(run_id), observer)

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
