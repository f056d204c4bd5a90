"""Budgets on model spend: their limits, what was spent, and what calls in flight hold against them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from baton.store.context import StoreContext, utcnow
from baton.store.schema import budget_holds, budgets, llm_calls, runs

__all__ = ["BudgetState", "Budgets", "chain_budget_id", "release_holds"]


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
        held = (
            f" · held by calls in flight: {self.held_tokens:,} tokens"
            + (f", ${self.held_usd:.4g}" if self.held_usd else "")
            if self.held_tokens or self.held_usd
            else ""
        )
        return " · ".join(parts) + held + (" (the event chain's)" if self.chain else "")

    def to_json_dict(self) -> dict[str, object]:
        """The JSON shape (`baton show --json`, the API)."""
        return {
            "scope": "chain" if self.chain else "run", "tokens": self.tokens, "usd": self.usd,
            "spent_tokens": self.spent_tokens, "spent_usd": round(self.spent_usd, 8),
        }  # fmt: skip


class Budgets:
    """The budgets of runs and chains: set, read, held against by calls in flight, and settled."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    def set(
        self,
        budget_id: str,
        *,
        tokens: int | None,
        usd: float | None,
        only_new: bool = False,
        conn: Connection | None = None,
    ) -> None:
        """Make `budget_id` a budget of `tokens` and `usd` (None: no limit on that). A new one starts from what
        its run (or its chain's runs) already spent on model calls; an existing one keeps counting its own, or
        stays as it is with `only_new`."""
        now = utcnow()
        with self._ctx.begin(conn) as c:
            found = c.execute(select(budgets.c.id).where(budgets.c.id == budget_id)).first()
            if found is None:
                spent_tokens, spent_usd = self._spent(c, budget_id)
                row = {
                    "id": budget_id, "tokens": tokens, "usd": usd, "spent_tokens": spent_tokens,
                    "spent_usd": spent_usd, "updated_at": now,
                }  # fmt: skip
                # Made at the same moment by another process: that one counts from then, as this would have.
                c.execute(self._ctx.insert(budgets).values(**row).on_conflict_do_nothing(index_elements=["id"]))
            elif not only_new:
                c.execute(
                    update(budgets).where(budgets.c.id == budget_id).values(tokens=tokens, usd=usd, updated_at=now)
                )

    def _spent(self, c: Connection, budget_id: str) -> tuple[int, float]:
        """What the model calls of a run (or of a chain's runs) recorded so far: tokens, and dollars where priced."""
        calls = llm_calls.c
        if budget_id.startswith("chain:"):
            members = select(runs.c.id).where(runs.c.correlation_id == budget_id.removeprefix("chain:"))
            which = calls.run_id.in_(members)
        else:
            which = calls.run_id == budget_id
        query = select(
            func.coalesce(func.sum(calls.input_tokens + calls.output_tokens), 0),
            func.coalesce(func.sum(calls.cost_usd), 0),
        ).where(which)
        tokens, usd = c.execute(query).one()
        return int(tokens), float(usd)

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

    def hold(
        self, hold_id: str, ids: Sequence[str], *, run_id: str, idx: int, tokens: int, usd: float
    ) -> BudgetState | None:
        """Hold `tokens` and `usd` (a call's worst case), as `hold_id`, against every budget of `ids`: all or
        none. None when held; else the budget it would take past its limit, as it stands (nothing is held).

        Each hold is a conditional update: on PostgreSQL a second one waits for the first's row lock and checks
        the sum again, on SQLite writers take turns, so no two processes both take the last of a budget.
        """
        for _ in range(3):
            refused = self._hold(hold_id, ids, run_id, idx, tokens, usd)
            if refused is None or not refused.fits(tokens, usd):
                return refused
            # Refused, then a call in flight settled for less than it held: it fits now; try again.
        return refused

    def _hold(
        self, hold_id: str, ids: Sequence[str], run_id: str, idx: int, tokens: int, usd: float
    ) -> BudgetState | None:
        b = budgets.c
        now = utcnow()
        with self._ctx.engine.connect() as c:
            for budget_id in ids:
                within = update(budgets).where(
                    b.id == budget_id,
                    or_(b.tokens.is_(None), b.spent_tokens + b.held_tokens + tokens <= b.tokens),
                    or_(b.usd.is_(None), b.spent_usd + b.held_usd + usd <= b.usd),
                )
                taken = c.execute(within.values(held_tokens=b.held_tokens + tokens, held_usd=b.held_usd + usd))
                if taken.rowcount == 0:
                    c.rollback()
                    found = self.of([budget_id])
                    if not found:  # deleted meanwhile (its run was): held against the others alone
                        return self._hold(hold_id, [i for i in ids if i != budget_id], run_id, idx, tokens, usd)
                    return found[0]
                row = {
                    "id": hold_id, "budget_id": budget_id, "run_id": run_id, "step_idx": idx, "tokens": tokens,
                    "usd": usd, "created_at": now,
                }  # fmt: skip
                c.execute(insert(budget_holds).values(**row))
            c.commit()
        return None

    def settle(self, hold_id: str, ids: Sequence[str], *, tokens: int, usd: float) -> None:
        """The call that held `hold_id` spent `tokens` and `usd`: count that against `ids`, and give back its
        hold, unless whoever took its run or step over already did."""
        b = budgets.c
        with self._ctx.engine.begin() as c:
            given = _give_back(c, budget_holds.c.id == hold_id)
            for budget_id in ids:
                tokens_back, usd_back = given.get(budget_id, (0, 0.0))
                c.execute(
                    update(budgets)
                    .where(b.id == budget_id)
                    .values(
                        held_tokens=b.held_tokens - tokens_back,
                        held_usd=b.held_usd - usd_back,
                        spent_tokens=b.spent_tokens + tokens,
                        spent_usd=b.spent_usd + usd,
                        updated_at=utcnow(),
                    )
                )

    def release(self, run_id: str, idx: int | None = None, *, conn: Connection | None = None) -> None:
        """Give back what the calls of a run (of its step `idx`) hold: none of them is in flight any more (the
        run is being resumed, or a worker takes a dead one's step over), and none will settle."""
        with self._ctx.begin(conn) as c:
            release_holds(c, run_id, idx)

    def forget(self, budget_id: str) -> None:
        """Delete `budget_id` (the run it was written for was not made)."""
        with self._ctx.engine.begin() as c:
            c.execute(budgets.delete().where(budgets.c.id == budget_id))


def release_holds(c: Connection, run_id: str, idx: int | None = None) -> None:
    """In the transaction of `c`: give back what the calls of a run (of its step `idx`) hold."""
    h = budget_holds.c
    which = h.run_id == run_id if idx is None else (h.run_id == run_id) & (h.step_idx == idx)
    b = budgets.c
    for budget_id, (tokens, usd) in _give_back(c, which).items():
        c.execute(
            update(budgets)
            .where(b.id == budget_id)
            .values(held_tokens=b.held_tokens - tokens, held_usd=b.held_usd - usd)
        )


def _give_back(c: Connection, which: Any) -> dict[str, tuple[int, float]]:
    """Delete the holds `which` selects; what they held, by budget."""
    h = budget_holds.c
    # What this very delete took: a settle and a release racing for one hold give it back once.
    rows = c.execute(delete(budget_holds).where(which).returning(h.budget_id, h.tokens, h.usd)).all()
    given: dict[str, tuple[int, float]] = {}
    for budget_id, tokens, usd in rows:
        before = given.get(budget_id, (0, 0.0))
        given[budget_id] = (before[0] + tokens, before[1] + usd)
    return given


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _state(row: object) -> BudgetState:
    r = row  # a RowMapping
    return BudgetState(
        id=r["id"], tokens=r["tokens"], usd=r["usd"], spent_tokens=r["spent_tokens"],  # type: ignore[index]
        spent_usd=r["spent_usd"], held_tokens=r["held_tokens"], held_usd=r["held_usd"],  # type: ignore[index]
        updated_at=r["updated_at"],  # type: ignore[index]
    )  # fmt: skip
