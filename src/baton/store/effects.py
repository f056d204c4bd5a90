"""The ledger of side effects: which idempotency keys were acted on, and what the action returned."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from baton.store.context import StoreContext
from baton.store.schema import attempts, effects

__all__ = ["EffectRecord", "Effects"]


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

    def to_json_dict(self) -> dict[str, Any]:
        """The `baton effects --json` shape."""
        return {
            "key": self.key, "run_id": self.run_id, "step_idx": self.step_idx, "name": self.name,
            "status": self.status, "owner": self.owner, "result": self.result,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }  # fmt: skip


class Effects:
    """The ledger of side effects: claimed before the act, marked done after it."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx

    def begin(
        self, key: str, run_id: str, idx: int, name: str, now: datetime, owner: str | None = None
    ) -> EffectRecord | None:
        """Claim `key` for `owner` before acting: None when it is new (act now), else the record found."""
        row = {
            "key": key, "run_id": run_id, "step_idx": idx, "name": name, "status": "started", "started_at": now,
            "owner": owner,
        }  # fmt: skip
        try:
            with self._ctx.engine.begin() as c:
                c.execute(insert(effects), row)
            return None
        except IntegrityError:
            found = self.get(key)
            assert found is not None
            return found

    def finish(self, key: str, result: Any, now: datetime, *, conn: Connection | None = None) -> None:
        """Record that the effect happened, with what it returned (JSON)."""
        with self._ctx.begin(conn) as c:
            c.execute(update(effects).where(effects.c.key == key).values(status="done", result=result, finished_at=now))

    def abandon(self, key: str, *, conn: Connection | None = None) -> None:
        """Forget a claimed key whose act failed before it happened, so that a retry may act."""
        with self._ctx.begin(conn) as c:
            c.execute(delete(effects).where(effects.c.key == key, effects.c.status == "started"))

    def mark(self, key: str, *, done: bool, now: datetime) -> EffectRecord | None:
        """A person's word on an uncertain effect: it happened (`done`), or it did not (the key is freed)."""
        with self._ctx.engine.begin() as c:
            if done:
                c.execute(update(effects).where(effects.c.key == key).values(status="done", finished_at=now))
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
        finished_at=row["finished_at"],
    )  # fmt: skip
