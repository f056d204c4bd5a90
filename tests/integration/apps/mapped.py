"""A pattern that baton does not ship, defined here only: `Map` applies one step to each item of a list
field, in parallel, then joins the results. It proves that a new pattern needs no change to the runtimes:
it says what may run next (`plan`), where each step's input comes from (`reads`, `input_of`) and what a
retry re-runs (`rerun_from`), and runs on every runtime, with resume and retry from a step.
"""

import copy

from pydantic import BaseModel, Field

# Beside this file: found when baton loads it by path, as workers do.
from switches import _control

from baton import Retry, Step, step
from baton._context import current_step
from baton.patterns.base import Pattern, fan_out, next_in_chain
from baton.patterns.plan import Next, States


class Map(Pattern):
    """`Map(name, split=..., each=..., size=N, join=...)`: `split` returns a contract whose `items` list holds
    at most `size` inputs of `each`; the k-th item runs as step `<each>_k` (the unused ones are skipped);
    `join` takes a contract whose `results` list holds the outputs, in the items' order."""

    kind = "map"

    def __init__(self, name: str, *, split: Step, each: Step, size: int, join: Step) -> None:
        self.name = name
        self.size = size
        lanes = []
        for k in range(1, size + 1):
            lane = copy.copy(each)
            lane.name = f"{each.name}_{k}"
            lanes.append(lane)
        self.steps = (split, *lanes, join)
        self.max_parallel = size
        self._register(None, __name__)

    @classmethod
    def branches(cls, steps: int) -> frozenset[int]:
        """The lanes: every step but the split and the join."""
        return frozenset(range(1, steps - 1))

    def plan(self, states: States) -> Next:
        """Split first; then one lane per item, in parallel; then the join."""
        split = next_in_chain(states, range(1))
        if split is not None:
            return split
        items = states.output(0, self.steps[0].output, self.steps[0].name).items
        return fan_out(states, list(range(1, len(items) + 1)), range(1, self.size + 1), then=self.size + 1)

    def reads(self, idx: int) -> tuple[int, ...]:
        """The split reads the run's input; a lane, the split's items; the join, the items (how many lanes
        ran) and every lane."""
        if idx == 0:
            return ()
        return (0,) if idx <= self.size else tuple(range(self.size + 1))

    def input_of(self, idx: int, states: States) -> BaseModel:
        """A lane's input is its item; the join's, the lanes' outputs in order."""
        if idx == 0:
            return super().input_of(idx, states)
        items = states.output(0, self.steps[0].output, self.steps[0].name).items
        if idx <= self.size:
            return items[idx - 1]
        outputs = [states.output(k, self.steps[k].output, self.steps[k].name) for k in range(1, len(items) + 1)]
        return self.steps[-1].input.model_validate({"results": outputs})

    def rerun_from(self, idx: int) -> list[int]:
        """A lane re-runs with the join only; the split re-splits, so everything runs again."""
        last = len(self.steps) - 1
        if idx == 0:
            return list(range(len(self.steps)))
        return [idx] if idx == last else [idx, last]


class Number(BaseModel):
    n: int = Field(ge=0, le=1000)


class Numbers(BaseModel):
    items: list[Number] = Field(max_length=4)


class Doubled(BaseModel):
    results: list[Number] = Field(max_length=4)


class Total(BaseModel):
    total: int


@step(retry=Retry(max_attempts=1))
def count_up(top: Number) -> Numbers:
    _control("count_up")
    return Numbers(items=[Number(n=k) for k in range(1, top.n + 1)])


@step(retry=Retry(max_attempts=1))
def double(x: Number) -> Number:
    _control(current_step().step)  # each lane counts, and is switched, under its own name
    return Number(n=x.n * 2)


@step(retry=Retry(max_attempts=1))
def add(d: Doubled) -> Total:
    _control("add")
    return Total(total=sum(x.n for x in d.results))


mapped = Map("mapped", split=count_up, each=double, size=4, join=add)
