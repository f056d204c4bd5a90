"""Steps: one unit of work from an input contract to an output contract."""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Callable
from typing import Any, overload

from pydantic import BaseModel

from baton.contracts import is_contract
from baton.errors import DefinitionError
from baton.retry import Retry

__all__ = ["Step", "check_timeout", "step"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")


class Step:
    """A typed unit of work: `input` contract in, `output` contract out, under a retry policy.

    Built by `@step` from a function's annotations. Agents (LLM-backed steps) are Steps too. `timeout` (seconds,
    or None) bounds each attempt: see `step`.
    """

    # Whether a model reads this step's input and writes its output (an Agent): their tokens are measured.
    calls_model = False

    def __init__(
        self,
        name: str,
        fn: Callable[[Any], Any],
        *,
        input: type[BaseModel],
        output: type[BaseModel],
        retry: Retry | None = None,
        side_effect: bool = False,
        approval: bool = False,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise DefinitionError(
                f"step name {name!r} is not valid: use letters, digits, '_', '-' or '.', at most 100 characters"
            )
        for role, contract in (("input", input), ("output", output)):
            if not is_contract(contract):
                raise DefinitionError(
                    f"step '{name}': its {role} contract must be a Pydantic model class, not {contract!r}"
                )
        if retry is not None and not isinstance(retry, Retry):
            raise DefinitionError(f"step '{name}': retry= takes a baton.Retry, not {retry!r}")
        self.name = name
        self.timeout = check_timeout(timeout, f"step '{name}'")
        self.fn = fn
        self.input = input
        self.output = output
        self.retry = retry or Retry()
        # Acts on the world (sends an e-mail, charges a card) through `baton.effect`, which does it once.
        self.side_effect = side_effect
        # The run stops before this step, awaiting a person's `baton approve` (or `reject`).
        self.approval = approval
        # An async step is awaited on an event loop (the one its run executes on); a sync one runs on a thread.
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def execute(self, value: BaseModel) -> Any:
        """Run the step's work on an already validated input, from sync code; returns what the work returned.

        An async step is awaited on baton's background loop, so this works inside a running loop too.
        """
        if self.is_async:
            from baton.runtime.aio import call_in_background  # the runtime imports steps, not the reverse

            return call_in_background(self.fn(value))
        return self.fn(value)

    def __call__(self, value: BaseModel) -> Any:
        """Call the underlying function directly, outside any run (handy in tests)."""
        return self.execute(value)

    def __repr__(self) -> str:
        return f"<Step {self.name}: {self.input.__name__} -> {self.output.__name__}>"


def check_timeout(timeout: object, what: str) -> float | None:
    """`timeout` as seconds (None: no timeout); a timeout that is not a number of seconds above 0 is refused."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise DefinitionError(f"{what}: timeout={timeout!r} must be a number of seconds above 0 (or None)")
    return float(timeout)


@overload
def step(fn: Callable[[Any], Any], /) -> Step: ...
@overload
def step(
    *,
    name: str | None = None,
    retry: Retry | None = None,
    side_effect: bool = False,
    approval: bool = False,
    timeout: float | None = None,
) -> Callable[[Callable[[Any], Any]], Step]: ...


def step(
    fn: Callable[[Any], Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = None,
    side_effect: bool = False,
    approval: bool = False,
    timeout: float | None = None,
) -> Step | Callable[[Callable[[Any], Any]], Step]:
    """Make a function a step; its contracts are read from its annotations (`def f(x: In) -> Out`).

    `side_effect=True` declares a step that acts on the world: it does so through `baton.effect`, which
    carries an idempotency key and never does the same effect twice, whatever retries or redeliveries come.
    `approval=True` stops the run before the step, `awaiting_approval`, until a person approves or rejects it.
    `timeout=SECONDS` bounds each attempt: one that runs past it fails with `StepTimeout` (transient, so retried
    under `retry`), and what it produces later is thrown away.
    """

    def build(func: Callable[[Any], Any]) -> Step:
        if isinstance(func, Step):
            raise DefinitionError(f"@step applied twice to '{func.name}'")
        if not callable(func):
            raise DefinitionError(f"@step decorates a function, not {func!r}")
        input_type, output_type = _contracts_of(func)
        return Step(
            name or func.__name__, func, input=input_type, output=output_type, retry=retry,
            side_effect=side_effect, approval=approval, timeout=timeout,
        )  # fmt: skip

    if fn is None:
        return build
    if isinstance(fn, Retry):
        raise DefinitionError("write @step(retry=Retry(...)), with the keyword")
    return build(fn)


def _contracts_of(func: Callable[..., Any]) -> tuple[type[BaseModel], type[BaseModel]]:
    label = getattr(func, "__qualname__", repr(func))
    sig = inspect.signature(func)
    params = [
        p
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if len(params) != 1 or params[0].kind is inspect.Parameter.KEYWORD_ONLY:
        raise DefinitionError(
            f"step '{label}' must take exactly one required positional parameter, its input contract "
            f"(found {len(params)}: {[p.name for p in params]})"
        )
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:  # a forward reference that does not resolve
        raise DefinitionError(f"step '{label}': cannot resolve its type annotations: {exc}") from exc
    param = params[0].name
    if param not in hints:
        raise DefinitionError(
            f"step '{label}': annotate parameter '{param}' with its input contract (a Pydantic model)"
        )
    if "return" not in hints:
        raise DefinitionError(f"step '{label}': annotate the return type with its output contract")
    input_type, output_type = hints[param], hints["return"]
    for role, tp in (("parameter '" + param + "'", input_type), ("return type", output_type)):
        if not is_contract(tp):
            raise DefinitionError(
                f"step '{label}': the {role} is {getattr(tp, '__name__', tp)!s}; contracts are Pydantic models"
            )
    return input_type, output_type
