"""What every pattern shares: its contracts, its recorded step names, and how it is run and resumed."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from baton.contracts import validate_input
from baton.patterns.registry import register
from baton.run import Run
from baton.runtime import get_runtime
from baton.runtime.executor import Observer
from baton.steps import Step
from baton.store import RunStore, open_store

__all__ = ["NAME", "Pattern"]

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")


class Pattern:
    """A named arrangement of steps; the first step takes the input, the last one gives the output."""

    kind = "pipeline"
    name: str
    steps: tuple[Step, ...]

    def _register(self, target: str | None, module: str | None) -> None:
        self._target = target
        self._module = module
        register(self)

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
    ) -> Run:
        """Run to the end on `input` and return the recorded Run (check `.status`)."""
        value = validate_input(self.input, input, step=self.steps[0].name)
        return get_runtime(runtime).run(store_of(store), self, value, observer)

    def submit(
        self,
        input: BaseModel | dict[str, Any] | str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
    ) -> str:
        """Start on `input` and return the run id at once."""
        value = validate_input(self.input, input, step=self.steps[0].name)
        return get_runtime(runtime).submit(store_of(store), self, value)

    def resume(
        self,
        run_id: str,
        *,
        store: RunStore | str | None = None,
        runtime: str = "local",
        observer: Observer | None = None,
    ) -> Run:
        """Continue a failed or interrupted run; what succeeded is replayed from its checkpoints, not re-run."""
        s = store_of(store)
        run_id = s.runs.resolve_id(run_id)
        s.runs.reap(run_id)  # a run whose owner is gone is interrupted, so resumable
        return get_runtime(runtime).resume(s, self, run_id, observer)

    def retry(
        self,
        run_id: str,
        from_step: str,
        *,
        store: RunStore | str | None = None,
        runtime: str | None = None,
    ) -> str:
        """Run a finished run again from `from_step`: its checkpoint and those after it are discarded and the
        steps re-run in the background (on the run's own runtime unless `runtime` says); returns the run id.
        """
        s = store_of(store)
        run_id = s.runs.resolve_id(run_id)
        s.runs.reap(run_id)  # a run whose owner is gone has stopped, so it may be retried
        where = runtime or s.runs.get(run_id).runtime
        return get_runtime(where).retry_from(s, self, run_id, from_step)

    def rerun_from(self, idx: int) -> list[int]:
        """The steps that run again when a run is retried from step `idx`, that one first: it and those after."""
        return list(range(idx, len(self.steps)))


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
