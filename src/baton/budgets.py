"""Budgets on what a run's model calls spend: tokens and dollars, checked before every call, on every worker.

`Budget(tokens=..., usd=...)` is declared on a pattern (`budget=` of a pipeline or a supervisor, of
`@on(...)`) or given for one run (`submit(..., budget=)`, `baton run --budget-usd`). Before each
model call, the run's recorded spend, what calls in flight hold, and the call's worst case (its prompt and its
`max_tokens` of answer) are checked against it in the store; past it, no call is made and the step fails with
`BudgetExceeded`. `Budget(..., chain=True)` (or `publish(..., budget=)`) is one budget for a whole event chain.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from baton.errors import BudgetExceeded, DefinitionError, RunError

if TYPE_CHECKING:
    from baton._context import StepContext
    from baton.run import Run
    from baton.store import RunStore
    from baton.store.budgets import BudgetState

__all__ = ["Budget", "Hold", "budgets_of", "check_budget", "hold", "rebudget", "record_budget", "settle"]


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `tokens` (input and output) and `usd` of model calls, for a run, or with `chain=True` for the
    run and every run its events start."""

    tokens: int | None = None
    usd: float | None = None
    chain: bool = False

    def __post_init__(self) -> None:
        if self.tokens is None and self.usd is None:
            raise DefinitionError("Budget() needs tokens= or usd= (or both)")
        if self.tokens is not None and (
            isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens <= 0
        ):
            raise DefinitionError(f"Budget(tokens={self.tokens!r}): must be a whole number of tokens above 0")
        if self.usd is not None and (
            isinstance(self.usd, bool)
            or not isinstance(self.usd, int | float)
            or not math.isfinite(self.usd)
            or self.usd <= 0
        ):
            raise DefinitionError(f"Budget(usd={self.usd!r}): must be a number of dollars above 0")

    def describe(self) -> str:
        """`$0.50 and 20,000 tokens`, for messages."""
        parts = [f"${self.usd:g}"] if self.usd is not None else []
        parts += [f"{self.tokens:,} tokens"] if self.tokens is not None else []
        return " and ".join(parts)


def check_budget(budget: object, what: str) -> Budget | None:
    """`budget` if it is a Budget (or None); anything else is refused, naming `what`."""
    if budget is None or isinstance(budget, Budget):
        return budget
    raise DefinitionError(f"{what}: budget= takes a baton.Budget(tokens=..., usd=...), not {budget!r}")


def record_budget(
    store: RunStore, run_id: str, correlation_id: str | None, budget: Budget, *, declared: bool = False
) -> None:
    """Write `budget` for a new run (keyed by its id), or for its chain when `budget.chain`. A chain's budget
    that a pattern `declared` is written by its chain's first run only: a person may have raised it since."""
    from baton.store.budgets import chain_budget_id

    key = chain_budget_id(correlation_id or run_id) if budget.chain else run_id
    store.budgets.set(key, tokens=budget.tokens, usd=budget.usd, only_new=budget.chain and declared)


def rebudget(store: RunStore, run: Run, budget: object, what: str) -> None:
    """Before `run` goes on again (`what`: a resume, a retry): `budget`, if given, becomes its budget (its
    event chain's with `chain=True`). What it spent still counts; a limit it does not give stays as it was.
    A run still going is left as it is (its runtime refuses the resume). What its calls held is given back
    when it is reopened (`Runs.reopen`)."""
    from baton.store.budgets import chain_budget_id

    checked = check_budget(budget, what)
    if checked is None or not run.status.finished:
        return
    key = chain_budget_id(run.correlation_id or run.id) if checked.chain else run.id
    [before] = store.budgets.of([key]) or [None]
    tokens = checked.tokens if checked.tokens is not None or before is None else before.tokens
    usd = checked.usd if checked.usd is not None or before is None else before.usd
    store.budgets.set(key, tokens=tokens, usd=usd)


@dataclass(frozen=True, slots=True)
class Hold:
    """What one call holds against its run's budgets until it is settled."""

    id: str
    ids: tuple[str, ...]
    tokens: int
    usd: float


def hold(ctx: StepContext, store: RunStore, *, model: str, prompt_tokens: int, max_tokens: int) -> Hold | None:
    """Hold a call's worst case against the run's budgets (None when the run has none).

    Raises `BudgetExceeded`, and nothing is held or called, when it would take a budget past its limit.
    """
    from baton.pricing import cost_of

    budgets = budgets_of(ctx, store)
    if not budgets:
        return None
    tokens = prompt_tokens + max_tokens
    price = cost_of(model, prompt_tokens, max_tokens)
    if price is None and any(b.usd is not None for b in budgets):
        raise RunError(
            f"step '{ctx.step}': the run has a budget in dollars, but no price is known for model {model!r}, so "
            "a call's cost cannot be held against it: declare it with baton.register_price(), or budget tokens"
        )
    usd = price or 0.0
    ids = tuple(b.id for b in budgets)
    hold_id = uuid.uuid4().hex
    taking = functools.partial(store.budgets.hold, hold_id, ids, run_id=ctx.run_id, idx=ctx.idx, tokens=tokens, usd=usd)
    refused = store.patiently(taking)
    if refused is not None:
        raise _exceeded(ctx.step, refused, tokens, usd)
    return Hold(hold_id, ids, tokens, usd)


def settle(store: RunStore, held: Hold, *, tokens: int, usd: float | None) -> None:
    """The call answered (or failed) having spent `tokens` and `usd`: count it, and give its hold back."""
    store.patiently(functools.partial(store.budgets.settle, held.id, held.ids, tokens=tokens, usd=usd or 0.0))


def budgets_of(ctx: StepContext, store: RunStore) -> Sequence[BudgetState]:
    """The run's budgets, read once an attempt (a chain's budget added while it runs counts from the next)."""
    if ctx.budgets is None:
        ctx.budgets = tuple(store.patiently(store.budgets.for_run, ctx.run_id))
    return ctx.budgets


def _exceeded(step: str, found: BudgetState, tokens: int, usd: float) -> BudgetExceeded:
    # As the budget stands now, which a call settling since may have moved: the limit it is over, or else
    # the one it comes closest to.
    scope = "event chain" if found.chain else "run"
    token_share = (found.spent_tokens + found.held_tokens + tokens) / found.tokens if found.tokens else 0.0
    usd_share = (found.spent_usd + found.held_usd + usd) / found.usd if found.usd else 0.0
    if found.tokens is not None and (found.usd is None or token_share >= usd_share):
        spent = f"{found.spent_tokens:,} tokens" + (f" (+{found.held_tokens:,} held)" if found.held_tokens else "")
        return BudgetExceeded(step, f"{found.tokens:,} tokens", spent, f"{tokens:,} tokens", scope)
    spent = f"${found.spent_usd:.6g}" + (f" (+${found.held_usd:.6g} held)" if found.held_usd else "")
    return BudgetExceeded(step, f"${found.usd or 0:g}", spent, f"${usd:.6g}", scope)
