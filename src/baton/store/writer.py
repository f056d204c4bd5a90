"""The hot path of the store: creating a run and checkpointing its steps.

These writes happen once per step of every run, so they skip the ORM and SQL compilation: each is one
prepared statement on the driver's connection, and a step costs one statement and one commit. Each statement
is a constant holding its text per dialect, composed from named pieces (never edited after the fact); the
tables are the ones `schema.py` declares and the migrations create.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from baton._context import LLMCall
from baton.status import RunStatus, StepStatus
from baton.store.rows import CLEAR_ERRORS_SQL

__all__ = ["LostOwnership", "RunWriter", "recount_step", "write_calls"]


class _NotDelivered(Exception):
    """The delivery was already made (rolls the run's creation back)."""


class LostOwnership(Exception):
    """This process no longer owns the run (it was declared interrupted, or taken over); nothing was written."""


# Placeholders: ?s text, ?i integer, ?f float, ?b boolean, ?t timestamp, ?j JSON. Each statement is written
# once with them and kept per dialect (`_per_dialect`): SQLite's `?`, and psycopg's `%s` with the type spelled
# out, which PostgreSQL needs where a parameter feeds INSERT ... SELECT.
_PG_CASTS = {
    "s": "TEXT",
    "i": "INTEGER",
    "f": "DOUBLE PRECISION",
    "b": "BOOLEAN",
    "t": "TIMESTAMP",
    "j": "JSONB",
}
_PLACEHOLDER = re.compile(r"\?([sifbtj])")


def _per_dialect(sql: str) -> dict[str, str]:
    """The statement in each dialect's parameter style."""
    return {
        "sqlite": _PLACEHOLDER.sub("?", sql),
        "postgresql": _PLACEHOLDER.sub(lambda m: f"CAST(%s AS {_PG_CASTS[m.group(1)]})", sql),
    }


CREATE_RUN = _per_dialect("""
INSERT INTO baton_runs (id, pipeline, target, status, input, output, step_names, current_step, current_attempt,
    current_started_at, failed_step, cancel_requested, claims, owner, lease_expires_at, tokens_in, tokens_out,
    created_at, started_at, finished_at, updated_at, input_boundary_tokens, runtime, correlation_id, trigger_event,
    kind)
VALUES (?s, ?s, ?s, ?s, ?j, NULL, ?j, ?i, ?i, ?t, NULL, ?b, ?i, ?s, ?t, 0, 0, ?t, ?t, NULL, ?t, ?i, ?s, ?s, ?s, ?s)
""")

# The delivery of an event to a subscriber, in the transaction that creates the run handling it: the first
# dispatch of the pair creates it; any other finds it there and starts nothing.
NEW_DELIVERY = _per_dialect("""
INSERT INTO baton_deliveries (event_id, subscriber, run_id, deliveries, created_at, updated_at)
VALUES (?s, ?s, ?s, 1, ?t, ?t)
ON CONFLICT (event_id, subscriber) DO NOTHING
""")

# A replay: the delivery is handed to a new run, provided it still is where the replay found it and that is a
# dead letter (its run failed, or none could start): a subscriber never handles an event twice.
REDELIVERY = _per_dialect("""
UPDATE baton_deliveries SET run_id = ?s, deliveries = deliveries + 1, error = NULL, updated_at = ?t
WHERE event_id = ?s AND subscriber = ?s AND COALESCE(run_id, '') = ?s
    AND (run_id IS NULL OR run_id IN (SELECT id FROM baton_runs WHERE status IN ('failed', 'cancelled', 'interrupted')))
""")

# An event a step emitted, in its checkpoint's transaction; it carries the emitting run's correlation id.
INSERT_EVENT = _per_dialect("""
INSERT INTO baton_events (id, type, payload, correlation_id, source_run, source_step, created_at, runtime)
SELECT ?s, ?s, ?j, COALESCE(correlation_id, id), id, ?i, ?t, runtime FROM baton_runs WHERE id = ?s
""")

# A checkpoint is built from these pieces. The step's row is written only while `owner` still owns the
# running run (a fence against a process that was declared dead and came back).
_UPSERT_STEP = f"""
INSERT INTO baton_steps (run_id, idx, name, status, attempts, output, tokens_in, tokens_out, started_at,
    finished_at, duration_ms, boundary_tokens)
SELECT ?s, ?i, ?s, ?s, ?i, ?j, 0, 0, ?t, ?t, ?f, ?i
FROM baton_runs WHERE id = ?s AND owner = ?s AND status = 'running'
ON CONFLICT (run_id, idx) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
    output = excluded.output, {CLEAR_ERRORS_SQL}, started_at = excluded.started_at,
    finished_at = excluded.finished_at, duration_ms = excluded.duration_ms,
    boundary_tokens = excluded.boundary_tokens"""

# The celery runtime's: the worker writes only while it still holds the step's lease (a worker thought dead
# whose step was taken over must not overwrite the checkpoint the next step may already have read), and the
# lease ends with it.
_UPSERT_LEASED_STEP = (
    _UPSERT_STEP
    + """,
    lease_owner = NULL, lease_expires_at = NULL
WHERE baton_steps.lease_owner = ?s"""
)

# The same statement reads whether a cancel was requested.
_RETURNING_CANCEL = "\nRETURNING (SELECT cancel_requested FROM baton_runs WHERE id = baton_steps.run_id)\n"

CHECKPOINT = _per_dialect(_UPSERT_STEP + _RETURNING_CANCEL)
CHECKPOINT_LEASED = _per_dialect(_UPSERT_LEASED_STEP + _RETURNING_CANCEL)

_FINISH_RUN_SQL = """
UPDATE baton_runs SET status = 'succeeded', output = ?j, finished_at = ?t, updated_at = ?t, current_step = NULL,
    owner = NULL, lease_expires_at = NULL
WHERE id = ?s AND owner = ?s"""
FINISH_RUN = _per_dialect(_FINISH_RUN_SQL)


# PostgreSQL does the last checkpoint and the run's success in one statement (one round trip, one
# transaction); data-modifying CTEs are PostgreSQL's, so SQLite opens a transaction for the two statements.
def _final_pg(upsert: str) -> str:
    return _per_dialect(
        "WITH ins AS ("
        + upsert
        + "\nRETURNING 1 AS ok), upd AS ("
        + _FINISH_RUN_SQL
        + " AND EXISTS (SELECT 1 FROM ins) RETURNING 1) SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)"
    )["postgresql"]


FINAL_CHECKPOINT = {"postgresql": _final_pg(_UPSERT_STEP)}
FINAL_CHECKPOINT_LEASED = {"postgresql": _final_pg(_UPSERT_LEASED_STEP)}

INSERT_CALL = _per_dialect("""
INSERT INTO baton_llm_calls (run_id, step_idx, attempt, seq, provider, model, input_tokens, output_tokens,
    latency_ms, cost_usd, outcome, error, started_at)
VALUES (?s, ?i, ?i, ?i, ?s, ?s, ?i, ?i, ?f, ?f, ?s, ?s, ?t)
""")

# Totals are recounted from the calls, so a step's and a run's usage always add up to what was called. A
# cost is unknown (NULL) as soon as one call's model has no price: a sum that leaves it out would look free.
RECOUNT_STEP = _per_dialect("""
UPDATE baton_steps SET
    tokens_in = (SELECT COALESCE(SUM(input_tokens), 0) FROM baton_llm_calls WHERE run_id = ?s AND step_idx = ?i),
    tokens_out = (SELECT COALESCE(SUM(output_tokens), 0) FROM baton_llm_calls WHERE run_id = ?s AND step_idx = ?i),
    cost_usd = (SELECT CASE WHEN COUNT(*) = COUNT(cost_usd) THEN COALESCE(SUM(cost_usd), 0) END
        FROM baton_llm_calls WHERE run_id = ?s AND step_idx = ?i)
WHERE run_id = ?s AND idx = ?i
""")

RECOUNT_RUN = _per_dialect("""
UPDATE baton_runs SET
    tokens_in = (SELECT COALESCE(SUM(input_tokens), 0) FROM baton_llm_calls WHERE run_id = ?s),
    tokens_out = (SELECT COALESCE(SUM(output_tokens), 0) FROM baton_llm_calls WHERE run_id = ?s),
    cost_usd = (SELECT CASE WHEN COUNT(*) = COUNT(cost_usd) THEN COALESCE(SUM(cost_usd), 0) END
        FROM baton_llm_calls WHERE run_id = ?s)
WHERE id = ?s
""")


def _ts_sqlite(value: datetime | None) -> str | None:
    # The format SQLAlchemy's SQLite DateTime reads and writes, so both paths see the same values.
    return None if value is None else value.isoformat(" ", "microseconds")


def _ts_native(value: datetime | None) -> datetime | None:
    return value


class RunWriter:
    """Writes a run's creation and its checkpoints on one driver connection (from the store's pool)."""

    def __init__(
        self, proxied: Any, dialect: str, lease_seconds: float, connect: Callable[[], Any] | None = None
    ) -> None:
        self._connect = connect
        self._proxied = proxied
        self.conn = proxied.dbapi_connection
        self.dialect = dialect
        self.ts = _ts_sqlite if dialect == "sqlite" else _ts_native
        self.lease_seconds = lease_seconds
        self._create, self._checkpoint, self._finish = CREATE_RUN[dialect], CHECKPOINT[dialect], FINISH_RUN[dialect]
        self._leased = CHECKPOINT_LEASED[dialect]
        self._final, self._final_leased = FINAL_CHECKPOINT.get(dialect), FINAL_CHECKPOINT_LEASED.get(dialect)
        self._saved_mode = self._set_autocommit(None if dialect == "sqlite" else True)
        self.cur = self.conn.cursor()

    def broken(self) -> bool:
        """True when the connection can no longer be used (closed, or lost by psycopg)."""
        if self.dialect == "postgresql":
            return bool(self.conn.closed or self.conn.broken)
        return False

    def renew(self) -> None:
        """Replace a broken connection with a new one from the pool (the database came back)."""
        if self._connect is None:
            raise RuntimeError("this writer cannot reconnect")
        self.close()
        self.__init__(self._connect(), self.dialect, self.lease_seconds, self._connect)  # type: ignore[misc]

    def close(self) -> None:
        """Give the connection back to the pool as the pool lent it."""
        # A broken connection cannot be reset or closed cleanly: it is dropped from the pool instead.
        if self.broken():
            with contextlib.suppress(Exception):
                self._proxied.invalidate()
            return
        with contextlib.suppress(Exception):
            self.cur.close()
            self._set_autocommit(self._saved_mode)
        with contextlib.suppress(Exception):
            self._proxied.close()

    def _set_autocommit(self, mode: Any) -> Any:
        # Autocommit: a write of one statement is its own transaction, which spares the driver's BEGIN and
        # COMMIT (two round trips on PostgreSQL). Writes of several statements open a transaction explicitly.
        if self.dialect == "sqlite":
            previous, self.conn.isolation_level = self.conn.isolation_level, mode
        else:
            previous, self.conn.autocommit = self.conn.autocommit, mode
        return previous

    @contextlib.contextmanager
    def _transaction(self, cur: Any) -> Iterator[None]:
        if self.dialect != "sqlite":
            with self.conn.transaction():
                yield
            return
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def create_run(
        self,
        *,
        run_id: str,
        pipeline: str,
        target: str | None,
        input_json: str,
        step_names_json: str,
        owner: str,
        now: datetime,
        lease_until: datetime | None,
        pending: bool = False,
        input_tokens: int | None = None,
        runtime: str = "local",
        correlation_id: str | None = None,
        trigger_event: str | None = None,
        delivery: tuple[str, str | None] | None = None,
        kind: str = "pipeline",
    ) -> bool:
        """Record a new run owned by `owner`: running at its first step, or `pending` (submitted, to start).

        A run of the celery runtime is owned by the runtime as a whole, with no lease of its own: its steps
        carry the leases of the workers that execute them. A run started by an event's delivery carries
        that event (`trigger_event`) and its `correlation_id`; any other run is a chain of its own.

        With `delivery` = (subscriber, the run it replaces or None), the run is the subscriber's handling of
        `trigger_event`, recorded in the same transaction; returns False, creating nothing, when the event
        was already handed to that subscriber (or the replay lost a race).
        """
        running = not pending
        ts = self.ts
        params = (
                run_id, pipeline, target, RunStatus.RUNNING.value if running else RunStatus.PENDING.value,
                input_json, step_names_json, 0 if running else None, 1 if running else 0,
                ts(now) if running else None, False, 1 if running else 0, owner,
                ts(lease_until) if lease_until else None, ts(now),
                ts(now) if running else None, ts(now), input_tokens, runtime, correlation_id or run_id,
                trigger_event, kind,
        )  # fmt: skip
        if delivery is None:
            self.cur.execute(self._create, params)
            return True
        subscriber, replaces = delivery
        try:
            with self._transaction(self.cur):
                if replaces is None:
                    sql, args = NEW_DELIVERY, (trigger_event, subscriber, run_id, ts(now), ts(now))
                else:  # "" replaces a delivery that never had a run
                    sql, args = REDELIVERY, (run_id, ts(now), trigger_event, subscriber, replaces)
                self.cur.execute(sql[self.dialect], args)
                if self.cur.rowcount != 1:
                    raise _NotDelivered
                self.cur.execute(self._create, params)
        except _NotDelivered:
            return False
        return True

    def record_calls(self, run_id: str, idx: int, attempt: int, calls: Sequence[LLMCall]) -> None:
        """Keep model calls the moment they are made (what `Steps.record_calls` does, on this connection)."""
        with self._transaction(self.cur):
            write_calls(self.cur, self.dialect, run_id, idx, attempt, calls)

    def checkpoint(
        self,
        run_id: str,
        owner: str,
        *,
        idx: int,
        name: str,
        attempt: int,
        output_json: str,
        started_at: datetime,
        finished_at: datetime,
        final_output: str | None = None,
        recount: bool = False,
        boundary_tokens: int | None = None,
        lease_owner: str | None = None,
        events: Sequence[tuple[str, str, str]] = (),
        calls: Sequence[LLMCall] = (),
    ) -> bool:
        """Save a step's output; with `final_output`, the run has succeeded; with `recount`, the step made
        model calls (already recorded) whose totals go on its row; with `lease_owner`, only while that
        worker holds the step's lease; `events` ((id, type, payload JSON) the step emitted) are written in
        the same transaction, as the outbox, and so are the model `calls` not yet recorded.

        Returns whether a cancel was requested. Raises `LostOwnership` (and writes nothing) when `owner` no
        longer owns the run (or `lease_owner` the step).
        """
        ts = self.ts
        cur = self.cur
        params: tuple[Any, ...] = (
            run_id, idx, name, StepStatus.SUCCEEDED.value, attempt, output_json, ts(started_at), ts(finished_at),
            (finished_at - started_at).total_seconds() * 1000.0, boundary_tokens, run_id, owner,
        )  # fmt: skip
        checkpoint, final = self._checkpoint, self._final
        if lease_owner is not None:
            checkpoint, final, params = self._leased, self._final_leased, (*params, lease_owner)
        if final_output is None and not recount and not events and not calls:
            cur.execute(checkpoint, params)
            rows = cur.fetchall()
            if not rows:
                raise LostOwnership(run_id)
            return bool(rows[0][0])
        finish = (final_output, ts(finished_at), ts(finished_at), run_id, owner)
        if final_output is not None and not recount and not events and not calls and final is not None:
            cur.execute(final, params + finish)
            inserted, updated = cur.fetchone()
            if not (inserted and updated):
                raise LostOwnership(run_id)
            return False
        with self._transaction(cur):
            cur.execute(checkpoint, params)
            rows = cur.fetchall()
            if not rows:
                raise LostOwnership(run_id)
            if calls:
                write_calls(cur, self.dialect, run_id, idx, attempt, calls)  # recounts the step and the run
            elif recount:
                recount_step(cur, self.dialect, run_id, idx)
            if events:
                insert = INSERT_EVENT[self.dialect]
                for event_id, kind, payload in events:
                    cur.execute(insert, (event_id, kind, payload, idx, ts(finished_at), run_id))
            if final_output is not None:
                cur.execute(self._finish, finish)
        return bool(rows[0][0])


def write_calls(cur: Any, dialect: str, run_id: str, idx: int, attempt: int, calls: Sequence[LLMCall]) -> None:
    """Insert an attempt's model calls with `cur` and recount the step's and the run's totals from them."""
    ts = _ts_sqlite if dialect == "sqlite" else _ts_native
    cur.executemany(
        INSERT_CALL[dialect],
        [
            (
                run_id, idx, attempt, seq, c.provider, c.model, c.input_tokens, c.output_tokens, c.latency_ms,
                c.cost_usd, c.outcome, c.error, ts(c.started_at),
            )
            for seq, c in enumerate(calls)
        ],
    )  # fmt: skip
    cur.execute(RECOUNT_STEP[dialect], (run_id, idx) * 4)
    cur.execute(RECOUNT_RUN[dialect], (run_id,) * 4)


def recount_step(cur: Any, dialect: str, run_id: str, idx: int) -> None:
    """Set a step row's totals from its recorded calls (after the row was written)."""
    cur.execute(RECOUNT_STEP[dialect], (run_id, idx) * 4)
