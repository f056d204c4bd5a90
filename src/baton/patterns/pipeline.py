"""The Pipeline pattern: each step's output is the next step's input."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

from baton.budgets import Budget, check_budget
from baton.errors import DefinitionError
from baton.patterns.base import NAME, Pattern, next_in_chain
from baton.patterns.plan import Done, Next, RunSteps, States
from baton.steps import Step

__all__ = ["Pipeline"]


class Pipeline(Pattern):
    """A chain of steps: `Pipeline("billing", [add_up, write_letter])`.

    Checked when built: every item is a step, names are unique, and each step's output contract is the
    next step's input contract.
    """

    def __init__(
        self, name: str, steps: Sequence[Step], *, target: str | None = None, budget: Budget | None = None
    ) -> None:
        if not isinstance(name, str) or not NAME.match(name):
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
        self.budget = check_budget(budget, f"Pipeline '{name}'")
        self.steps: tuple[Step, ...] = tuple(steps)
        # Made once: a chain's next node is the same for every run.
        self._follows: tuple[Next, ...] = (*(RunSteps((i + 1,)) for i in range(len(steps) - 1)), Done())
        self._register(target, sys._getframe(1).f_globals.get("__name__"))

    def plan(self, states: States) -> Next:
        """The first step that has not succeeded runs next."""
        return next_in_chain(states, range(len(self.steps))) or Done()

    def follows(self, idx: int) -> Next | None:
        """The next step, or the end after the last."""
        return self._follows[idx]

    def reads(self, idx: int) -> tuple[int, ...]:
        """Each step reads the previous one's checkpoint; the first, the run's input."""
        return (idx - 1,) if idx else ()

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}: {' -> '.join(self.step_names)}>"
