"""The celery runtime's hot path: taking a step's lease and reading its input in one round trip.

Every step a celery worker executes starts here, so, like `writer.py`, this skips SQLAlchemy: one prepared
statement on PostgreSQL (a data-modifying CTE: the run marked running, the step's lease taken, the input
read), one short transaction on SQLite.

The claim's commit does not wait for the disk on PostgreSQL (`synchronous_commit = off`, on this connection
only). A lease lost to a database crash is safe: the worker's checkpoint is fenced on its lease, so it finds
the lease gone and goes back through a claim, which finds the step free, done, or held by another worker.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from baton.store.rows import CLEAR_ERRORS_SQL

__all__ = ["FastClaim", "LeaseClaimer"]

# A step is taken when it has no row yet, or a row nobody holds that has not ended (a failed step waits for a
# resume to make it pending); a retake counts an attempt.
_TAKE = f"""
ON CONFLICT (run_id, idx) DO UPDATE SET status = 'running', attempts = s.attempts + 1,
    started_at = excluded.started_at, finished_at = NULL, duration_ms = NULL, {CLEAR_ERRORS_SQL},
    lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at
WHERE s.status NOT IN ('succeeded', 'skipped', 'failed') AND s.lease_owner IS NULL
RETURNING attempts
"""

_PG_CLAIM = (
    """
WITH run AS (
    -- Locked: a cancel (which locks the run to update it) waits for this claim to commit, and then sees its
    -- lease; a claim behind a cancel sees the run cancelled. Claims of one run take turns (not a shared lock:
    -- two claims of a pending run would each wait for the other to give up its share to mark it running).
    SELECT pipeline, target, step_names, cancel_requested, input FROM baton_runs
    WHERE id = %(run)s AND owner = 'celery' AND status IN ('pending', 'running')
        AND (CAST(%(fence)s AS INTEGER) IS NULL OR claims = CAST(%(fence)s AS INTEGER))
    FOR NO KEY UPDATE
), started AS (
    -- Only a run's first claim writes its row; the step's lease is what a claim is for.
    UPDATE baton_runs SET status = 'running', started_at = COALESCE(started_at, CAST(%(now)s AS TIMESTAMP)),
        updated_at = CAST(%(now)s AS TIMESTAMP)
    WHERE id = %(run)s AND owner = 'celery' AND status = 'pending' AND EXISTS (SELECT 1 FROM run)
    RETURNING 1
), claimed AS (
    INSERT INTO baton_steps AS s (run_id, idx, name, status, attempts, tokens_in, tokens_out, started_at,
        lease_owner, lease_expires_at)
    SELECT %(run)s, CAST(%(idx)s AS INTEGER), run.step_names ->> CAST(%(idx)s AS INTEGER), 'running', 1, 0, 0,
        %(now)s, %(me)s, %(until)s
    FROM run WHERE NOT run.cancel_requested AND run.step_names ->> CAST(%(idx)s AS INTEGER) IS NOT NULL
    """
    + _TAKE
    + """)
SELECT run.pipeline, run.target, run.step_names::text, run.cancel_requested, (SELECT attempts FROM claimed),
    CASE WHEN CAST(%(source)s AS INTEGER) < 0 THEN run.input::text END,
    (SELECT output::text FROM baton_steps WHERE run_id = %(run)s AND idx = CAST(%(source)s AS INTEGER))
FROM run
"""
)

# A message carries the run's fence (its `claims` when the message was sent): a run queued again since (by
# the sweeper, a resume) has moved it on, and the old message finds no live run (see `Runs.refence`).
_SQLITE_START = """
UPDATE baton_runs SET status = 'running', started_at = COALESCE(started_at, ?), updated_at = ?
WHERE id = ? AND owner = 'celery' AND status = 'pending' AND (? IS NULL OR claims = ?)
"""

_SQLITE_RUN = """
SELECT pipeline, target, step_names, cancel_requested, CASE WHEN ? < 0 THEN input END FROM baton_runs
WHERE id = ? AND owner = 'celery' AND status IN ('pending', 'running') AND (? IS NULL OR claims = ?)
"""

_SQLITE_STEP = (
    """
INSERT INTO baton_steps AS s (run_id, idx, name, status, attempts, tokens_in, tokens_out, started_at,
    lease_owner, lease_expires_at)
VALUES (?, ?, ?, 'running', 1, 0, 0, ?, ?, ?)"""
    + _TAKE
)

_SQLITE_SOURCE = "SELECT output FROM baton_steps WHERE run_id = ? AND idx = ?"


@dataclass(frozen=True, slots=True)
class FastClaim:
    """What the one-statement claim found; `attempt` is None when the step was not free (or the run had a
    cancel asked); `source_json` is the input it read (the run's, or step `source`'s checkpoint)."""

    pipeline: str
    target: str | None
    step_names: tuple[str, ...]
    cancel: bool
    attempt: int | None
    source_json: str | None


class LeaseClaimer:
    """Claims steps on a connection of its own (kept per thread by the store)."""

    def __init__(self, proxied: Any, dialect: str) -> None:
        self._proxied = proxied
        self.conn = proxied.dbapi_connection
        self.dialect = dialect
        if dialect == "postgresql":
            self.conn.autocommit = True
            self.conn.execute("SET synchronous_commit = off")
        else:
            self.conn.isolation_level = None
        self.cur = self.conn.cursor()

    def broken(self) -> bool:
        """True when the connection can no longer be used."""
        return self.dialect == "postgresql" and bool(self.conn.closed or self.conn.broken)

    def close(self) -> None:
        """Give the connection back (reset to the pool's defaults); a broken one is dropped from the pool."""
        if self.broken():
            with contextlib.suppress(Exception):
                self._proxied.invalidate()
            return
        with contextlib.suppress(Exception):
            self.cur.close()
            if self.dialect == "postgresql":
                self.conn.execute("RESET synchronous_commit")
                self.conn.autocommit = False
        with contextlib.suppress(Exception):
            self._proxied.close()

    def claim(
        self, run_id: str, idx: int, worker: str, now: datetime, lease: timedelta, source: int, fence: int | None
    ) -> FastClaim | None:
        """Take step `idx` if nobody holds it, and read its input: the run's when `source` < 0, else the
        checkpoint of step `source`. None when the run is not live (or, with `fence`, was queued again since)."""
        until = now + lease
        if self.dialect == "postgresql":
            params = {
                "now": now, "run": run_id, "idx": idx, "me": worker, "until": until, "source": source, "fence": fence,
            }  # fmt: skip
            self.cur.execute(_PG_CLAIM, params, prepare=True)
            row = self.cur.fetchone()
            if row is None:
                return None
            pipeline, target, names, cancel, attempt, run_input, output = row
            return FastClaim(
                pipeline, target, tuple(json.loads(names)), bool(cancel), attempt, run_input if source < 0 else output
            )
        ts_now, ts_until = now.isoformat(" ", "microseconds"), until.isoformat(" ", "microseconds")
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(_SQLITE_START, (ts_now, ts_now, run_id, fence, fence))
            row = cur.execute(_SQLITE_RUN, (source, run_id, fence, fence)).fetchone()
            if row is None:
                cur.execute("COMMIT")
                return None
            pipeline, target, names_text, cancel, run_input = row
            names = tuple(json.loads(names_text))
            attempt = None
            if not cancel and 0 <= idx < len(names):
                got = cur.execute(_SQLITE_STEP, (run_id, idx, names[idx], ts_now, worker, ts_until)).fetchone()
                attempt = got[0] if got else None
            output = cur.execute(_SQLITE_SOURCE, (run_id, source)).fetchone() if source >= 0 else None
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return FastClaim(
            pipeline, target, names, bool(cancel), attempt, run_input if source < 0 else (output[0] if output else None)
        )
