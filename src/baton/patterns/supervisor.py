"""The Supervisor pattern: a thin router picks narrow workers, they run in parallel, a merge stitches them."""

from __future__ import annotations

import copy
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from baton.budgets import Budget, check_budget
from baton.errors import ContractViolation, DefinitionError
from baton.patterns.base import NAME, Pattern, fan_out, next_in_chain
from baton.patterns.plan import Next, States
from baton.status import StepStatus
from baton.steps import Step

__all__ = ["Supervisor"]


class Supervisor(Pattern):
    """`Supervisor(name, router=plan, workers={"news": news, ...}, merge=report)`.

    The router's output is the routing contract: one optional field per worker, holding that worker's input
    when the router wants it called (None otherwise). The chosen workers run in parallel, each checkpointed
    on its own; `merge` takes a contract with one optional field per worker, holding its output. Checked
    when built: the routing contract's fields name exactly the workers and fit their inputs, and the merge's
    fields fit their outputs.
    """

    kind = "supervisor"

    def __init__(
        self,
        name: str,
        *,
        router: Step,
        workers: Mapping[str, Step],
        merge: Step,
        max_parallel: int | None = None,
        target: str | None = None,
        budget: Budget | None = None,
    ) -> None:
        if not isinstance(name, str) or not NAME.match(name):
            raise DefinitionError(f"Supervisor name {name!r} is not valid: letters, digits, '_', '-' or '.'")
        for role, item in (("router", router), ("merge", merge)):
            if not isinstance(item, Step):
                raise DefinitionError(f"Supervisor '{name}': {role}= takes a step or an agent, not {item!r}")
        if not isinstance(workers, Mapping) or not workers:
            raise DefinitionError(f"Supervisor '{name}' needs a non-empty dict of workers")
        for key, worker in workers.items():
            if not isinstance(worker, Step):
                hint = " (did you forget @step?)" if callable(worker) else ""
                raise DefinitionError(f"Supervisor '{name}': worker '{key}' is {worker!r}, not a step{hint}")
            if not isinstance(key, str) or not key.isidentifier():
                raise DefinitionError(f"Supervisor '{name}': worker name {key!r} must be a Python identifier")
        waiting = [s.name for s in (router, *workers.values(), merge) if getattr(s, "approval", False)]
        if waiting:
            raise DefinitionError(
                f"Supervisor '{name}': step {waiting[0]} needs approval; approvals go in a Pipeline (put the "
                "step after the supervisor, in a pipeline its merge's event starts)"
            )
        names = [router.name, *workers, merge.name]
        if len(set(names)) != len(names):
            raise DefinitionError(f"Supervisor '{name}': step names must be unique, got {names}")
        _check_slots(name, "the routing contract", router.output, {k: w.input for k, w in workers.items()}, "input")
        _check_slots(name, "the merge's input", merge.input, {k: w.output for k, w in workers.items()}, "output")
        if max_parallel is not None and max_parallel < 1:
            raise DefinitionError(f"Supervisor '{name}': max_parallel must be >= 1")
        self.name = name
        self.budget = check_budget(budget, f"Supervisor '{name}'")
        self.router = _RoutingStep(router, set(workers))
        # Each worker is recorded under its key in `workers`, whatever its own name.
        self.workers = {key: _renamed(worker, key) for key, worker in workers.items()}
        self.merge = merge
        # At most 8 at once by default: each running worker holds a database connection.
        self.max_parallel = max_parallel or min(len(workers), 8)
        self.steps: tuple[Step, ...] = (self.router, *self.workers.values(), merge)
        self._register(target, sys._getframe(1).f_globals.get("__name__"))

    @classmethod
    def branches(cls, steps: int) -> frozenset[int]:
        """The workers: every step but the router and the merge."""
        return frozenset(range(1, steps - 1))

    def plan(self, states: States) -> Next:
        """The router first; then the workers its route chose, in parallel (the others skipped); then the
        merge, once every chosen worker succeeded."""
        routed = next_in_chain(states, range(1))
        if routed is not None:
            return routed
        route = states.output(0, self.router.output, self.router.name)
        last = len(self.steps) - 1
        chosen = [i for i, key in enumerate(self.workers, start=1) if getattr(route, key) is not None]
        return fan_out(states, chosen, range(1, last), then=last)

    def reads(self, idx: int) -> tuple[int, ...]:
        """The router reads the run's input; a worker, the route; the merge, every worker's output."""
        last = len(self.steps) - 1
        if idx == 0:
            return ()
        return (0,) if idx < last else tuple(range(1, last))

    def input_of(self, idx: int, states: States) -> BaseModel:
        """A worker's input is its field of the route; the merge's, the workers' outputs by key."""
        last = len(self.steps) - 1
        if idx == 0:
            return super().input_of(idx, states)
        if idx < last:
            route = states.output(0, self.router.output, self.router.name)
            return getattr(route, self.steps[idx].name)
        outputs = {
            key: states.output(i, self.steps[i].output, key) if states.status(i) is StepStatus.SUCCEEDED else None
            for i, key in enumerate(self.workers, start=1)
        }
        return self.merge.input.model_validate(outputs)

    def rerun_from(self, idx: int) -> list[int]:
        """The steps that run again when retried from step `idx`: a worker's lane is its own, so a worker
        re-runs with the merge only; the router re-routes, so everything runs again."""
        last = len(self.steps) - 1
        if idx == 0:
            return list(range(len(self.steps)))
        return [idx] if idx == last else [idx, last]

    def __repr__(self) -> str:
        return f"<Supervisor {self.name}: {self.router.name} -> {{{', '.join(self.workers)}}} -> {self.merge.name}>"


class _RoutingStep(Step):
    """The router, with its boundary also refusing routes to workers that do not exist."""

    def __init__(self, router: Step, workers: set[str]) -> None:
        fn = self._aroute if router.is_async else self._route
        super().__init__(
            router.name, fn, input=router.input, output=router.output, retry=router.retry, timeout=router.timeout
        )
        self.inner = router
        self.known = workers
        # An agent router stays an agent for what measures models' boundaries.
        self.calls_model = router.calls_model

    def _route(self, value: BaseModel) -> Any:
        return self._checked(self.inner.fn(value))

    async def _aroute(self, value: BaseModel) -> Any:
        return self._checked(await self.inner.fn(value))

    def _checked(self, produced: Any) -> Any:
        """The router's answer; a route naming an unknown worker is a contract violation of the router."""
        keys = set(produced) if isinstance(produced, dict) else set(getattr(produced, "model_extra", None) or {})
        unknown = sorted(keys - self.known)
        if unknown:
            raise ContractViolation(
                contract=self.output.__name__,
                errors=[
                    {"field": k, "message": f"names no worker; the workers are {sorted(self.known)}", "type": "route"}
                    for k in unknown
                ],
                step=self.name,
                where="route",
            )
        return produced


def _renamed(worker: Step, key: str) -> Step:
    if worker.name == key:
        return worker
    renamed = copy.copy(worker)
    renamed.name = key
    return renamed


def _optional_type(annotation: Any) -> type | None:
    """X for `X | None` (or Optional[X]); None when the annotation is not optional of one model."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) != 1 or len(typing.get_args(annotation)) != 2 or not isinstance(args[0], type):
        return None
    return args[0]


def _check_slots(name: str, what: str, contract: type[BaseModel], slots: dict[str, type[BaseModel]], role: str) -> None:
    fields = contract.model_fields
    for field in fields:
        if field not in slots:
            raise DefinitionError(
                f"Supervisor '{name}': {what} ({contract.__name__}) has a field '{field}' that names no worker; "
                f"the workers are {sorted(slots)}"
            )
    for key, expected in slots.items():
        if key not in fields:
            raise DefinitionError(
                f"Supervisor '{name}': {what} ({contract.__name__}) needs a field '{key}: "
                f"{expected.__name__} | None = None' for worker '{key}'"
            )
        inner = _optional_type(fields[key].annotation)
        fits = inner is not None and (issubclass(inner, expected) if role == "input" else issubclass(expected, inner))
        if not fits:
            raise DefinitionError(
                f"Supervisor '{name}': {what} ({contract.__name__}) field '{key}' must be "
                f"'{expected.__name__} | None' to carry worker '{key}''s {role}"
            )
