"""Budgets on model spend: their limits, what was spent, and what calls in flight hold against them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, or_, select, update

from baton.store.context import StoreContext, utcnow
from baton.store.schema import budgets, runs

__all__ = ["BudgetState", "Budgets", "chain_budget_id"]


def chain_budget_id(correlation_id: str) -> str:
    """The id of the budget that an event chain's runs share."""
    return f"chain:{correlation_id}"


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One budget as the store has it: its limits (None: no limit on that), its spend, and what is held."""

    id: str
    tokens: int | None
    usd: float | None
    spent_tokens: int
    spent_usd: float
    held_tokens: int
    held_usd: float
    updated_at: datetime | None = None

    @property
    def chain(self) -> bool:
        """Whether it is an event chain's budget, rather than one run's."""
        return self.id.startswith("chain:")

    def fits(self, tokens: int, usd: float) -> bool:
        """Whether a call holding `tokens` and `usd` stays within this budget as it stands."""
        return (self.tokens is None or self.spent_tokens + self.held_tokens + tokens <= self.tokens) and (
            self.usd is None or self.spent_usd + self.held_usd + usd <= self.usd
        )

    def describe(self) -> str:
        """What was spent against what is allowed: `$0.012 of $0.05 (24%) · 1,200 of 10,000 tokens (12%)`."""
        parts = []
        if self.usd is not None:
            parts.append(f"${self.spent_usd:.4g} of ${self.usd:g} ({_share(self.spent_usd, self.usd)})")
        if self.tokens is not None:
            parts.append(f"{self.spent_tokens:,} of {self.tokens:,} tokens ({_share(self.spent_tokens, self.tokens)})")
        held = " · in flight: " + f"{self.held_tokens:,} tokens held" if self.held_tokens else ""
        return " · ".join(parts) + held + (" (the event chain's)" if self.chain else "")

    def to_json_dict(self) -> dict[str, object]:
        """The JSON shape (`baton show --json`, the API)."""
        return {
            "scope": "chain" if self.chain else "run", "tokens": self.tokens, "usd": self.usd,
            "spent_tokens": self.spent_tokens, "spent_usd": round(self.spent_usd, 8),
        }  # fmt: skip


class Budgets:
    """The budgets of runs and chains: set, read, held against and settled, each in one statement per budget."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    def set(self, budget_id: str, *, tokens: int | None, usd: float | None, conn: Connection | None = None) -> None:
        """Make `budget_id` a budget of `tokens` and `usd` (None: no limit on that); what it spent is kept."""
        now = utcnow()
        with self._ctx.begin(conn) as c:
            stmt = self._ctx.insert(budgets).values(id=budget_id, tokens=tokens, usd=usd, updated_at=now)
            c.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"], set_={"tokens": tokens, "usd": usd, "updated_at": now}
                )
            )

    def of(self, ids: Sequence[str]) -> list[BudgetState]:
        """The budgets among `ids` that exist, in the order of `ids`."""
        with self._ctx.engine.connect() as c:
            rows = c.execute(select(budgets).where(budgets.c.id.in_(list(ids)))).mappings().all()
        found = {r["id"]: _state(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def for_run(self, run_id: str) -> list[BudgetState]:
        """The budgets a run's model calls are held against: its own, and its event chain's (in that order)."""
        chain = select(runs.c.correlation_id).where(runs.c.id == run_id).scalar_subquery()
        query = select(budgets).where(or_(budgets.c.id == run_id, budgets.c.id == "chain:" + chain))
        with self._ctx.engine.connect() as c:
            rows = c.execute(query).mappings().all()
        return sorted((_state(r) for r in rows), key=lambda b: b.chain)

    def hold(self, ids: Sequence[str], tokens: int, usd: float) -> BudgetState | None:
        """Hold `tokens` and `usd` (a call's worst case) against every budget of `ids`, all or none.

        None when held; else the budget it would take past its limit, as it stands (nothing is held then).
        Each hold is one conditional update: on PostgreSQL a second one waits for the first's row lock and
        checks the sum again, on SQLite writers take turns, so no two processes both take the last of a budget.
        """
        for _ in range(3):
            refused = self._hold(ids, tokens, usd)
            if refused is None or not refused.fits(tokens, usd):
                return refused
            # Refused, then a call in flight settled for less than it held: it fits now; try again.
        return refused

    def _hold(self, ids: Sequence[str], tokens: int, usd: float) -> BudgetState | None:
        b = budgets.c
        with self._ctx.engine.connect() as c:
            for budget_id in ids:
                within = update(budgets).where(
                    b.id == budget_id,
                    or_(b.tokens.is_(None), b.spent_tokens + b.held_tokens + tokens <= b.tokens),
                    or_(b.usd.is_(None), b.spent_usd + b.held_usd + usd <= b.usd),
                )
                held = c.execute(
                    within.values(held_tokens=b.held_tokens + tokens, held_usd=b.held_usd + usd, updated_at=utcnow())
                )
                if held.rowcount == 0:
                    c.rollback()
                    found = self.of([budget_id])
                    if not found:
                        continue  # deleted meanwhile (its run was deleted): nothing to hold against
                    return found[0]
            c.commit()
        return None

    def settle(self, ids: Sequence[str], *, held_tokens: int, held_usd: float, tokens: int, usd: float) -> None:
        """A call held `held_*` and spent `tokens` and `usd`: give the hold back and count the spend."""
        b = budgets.c
        with self._ctx.engine.begin() as c:
            for budget_id in ids:
                c.execute(
                    update(budgets)
                    .where(b.id == budget_id)
                    .values(
                        held_tokens=b.held_tokens - held_tokens,
                        held_usd=b.held_usd - held_usd,
                        spent_tokens=b.spent_tokens + tokens,
                        spent_usd=b.spent_usd + usd,
                        updated_at=utcnow(),
                    )
                )

    def forget(self, budget_id: str) -> None:
        """Delete `budget_id` (the run it was written for was not made)."""
        with self._ctx.engine.begin() as c:
            c.execute(budgets.delete().where(budgets.c.id == budget_id))


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _state(row: object) -> BudgetState:
    r = row  # a RowMapping
    return BudgetState(
        id=r["id"], tokens=r["tokens"], usd=r["usd"], spent_tokens=r["spent_tokens"],  # type: ignore[index]
        spent_usd=r["spent_usd"], held_tokens=r["held_tokens"], held_usd=r["held_usd"],  # type: ignore[index]
        updated_at=r["updated_at"],  # type: ignore[index]
    )  # fmt: skip
