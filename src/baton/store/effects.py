"""The ledger of side effects: which idempotency keys were acted on, and what the action returned."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from baton.store.context import StoreContext
from baton.store.schema import attempts, effects

__all__ = ["KEEP", "EffectRecord", "Effects"]


class _Keep(Enum):
    KEEP = "keep"


# `Effects.mark(..., result=KEEP)`: the recorded result stays as it is (None, a JSON result, is a result).
KEEP = _Keep.KEEP


@dataclass(frozen=True, slots=True)
class EffectRecord:
    """One side effect: its key, where it belongs, and whether it is known to have happened."""

    key: str
    run_id: str
    step_idx: int
    name: str
    status: Literal["started", "done"]
    owner: str | None
    result: Any
    started_at: datetime
    finished_at: datetime | None
    # The JSON schema of the result the step uses, or None when it does not use it.
    result_schema: dict[str, Any] | None = None

    @property
    def result_used(self) -> bool:
        """Whether the step uses what the act returned: then a person who says it happened says what it returned."""
        return self.result_schema is not None

    def to_json_dict(self) -> dict[str, Any]:
        """The `baton effects --json` shape."""
        return {
            "key": self.key, "run_id": self.run_id, "step_idx": self.step_idx, "name": self.name,
            "status": self.status, "owner": self.owner, "result": self.result,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "result_schema": self.result_schema,
        }  # fmt: skip


class Effects:
    """The ledger of side effects: claimed before the act, marked done after it."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    def begin(
        self,
        key: str,
        run_id: str,
        idx: int,
        name: str,
        now: datetime,
        owner: str | None = None,
        result_schema: dict[str, Any] | None = None,
    ) -> EffectRecord | None:
        """Claim `key` for `owner` before acting: None when it is new (act now), else the record found.

        `result_schema` is the JSON schema of the result the step uses (None: it does not use it).
        """
        row = {
            "key": key, "run_id": run_id, "step_idx": idx, "name": name, "status": "started", "started_at": now,
            "owner": owner, "result_schema": result_schema,
        }  # fmt: skip
        try:
            with self._ctx.engine.begin() as c:
                c.execute(insert(effects), row)
            return None
        except IntegrityError:
            found = self.get(key)
            assert found is not None
            if found.status == "started" and found.owner == owner and found.started_at == now:
                # This very claim, made again because its connection broke after the commit: still new.
                return None
            return found

    def finish(self, key: str, result: Any, now: datetime, *, conn: Connection | None = None) -> None:
        """Record that the effect happened, with what it returned (JSON)."""
        with self._ctx.begin(conn) as c:
            c.execute(update(effects).where(effects.c.key == key).values(status="done", result=result, finished_at=now))

    def abandon(self, key: str, *, conn: Connection | None = None) -> None:
        """Forget a claimed key whose act failed before it happened, so that a retry may act."""
        with self._ctx.begin(conn) as c:
            c.execute(delete(effects).where(effects.c.key == key, effects.c.status == "started"))

    def expect(self, key: str, result_schema: dict[str, Any] | None) -> None:
        """Note the result the step's code uses now (it may have changed since the effect began)."""
        with self._ctx.engine.begin() as c:
            c.execute(update(effects).where(effects.c.key == key).values(result_schema=result_schema))

    def mark(self, key: str, *, done: bool, now: datetime, result: Any = KEEP) -> EffectRecord | None:
        """A person's word on an uncertain effect: it happened (`done`, with what it returned unless `result`
        is KEEP), or it did not (the key is freed). `baton.effects.settle` checks the result first."""
        with self._ctx.engine.begin() as c:
            if done:
                values: dict[str, Any] = {"status": "done", "finished_at": now}
                if result is not KEEP:
                    values["result"] = result
                c.execute(update(effects).where(effects.c.key == key).values(**values))
            else:
                c.execute(delete(effects).where(effects.c.key == key))
        return self.get(key)

    def rewinds(self, run_id: str, idx: int) -> int:
        """How many times a person retried the run from step `idx` or before it (its `Rewound` entries)."""
        with self._ctx.engine.connect() as c:
            return int(
                c.execute(
                    select(func.count()).where(
                        attempts.c.run_id == run_id, attempts.c.step_idx == idx, attempts.c.error_type == "Rewound"
                    )
                ).scalar_one()
            )

    def get(self, key: str) -> EffectRecord | None:
        """The record of `key`, if any."""
        with self._ctx.engine.connect() as c:
            row = c.execute(select(effects).where(effects.c.key == key)).mappings().first()
        return _record(row) if row is not None else None

    def list(self, run_id: str | None = None) -> builtins.list[EffectRecord]:
        """Effects, newest first (of one run, or all)."""
        query = select(effects).order_by(effects.c.started_at.desc())
        if run_id is not None:
            query = query.where(effects.c.run_id == run_id)
        with self._ctx.engine.connect() as c:
            rows = c.execute(query.limit(1000)).mappings().all()
        return [_record(r) for r in rows]


def _record(row: Any) -> EffectRecord:
    result = row["result"]
    return EffectRecord(
        key=row["key"], run_id=row["run_id"], step_idx=row["step_idx"], name=row["name"], status=row["status"],
        owner=row["owner"], result=result, started_at=row["started_at"],
        finished_at=row["finished_at"], result_schema=row["result_schema"],
    )  # fmt: skip
