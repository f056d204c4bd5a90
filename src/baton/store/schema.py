"""The store's tables. Changing them needs a new migration in `migrations/versions/`."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = [
    "attempts", "budget_holds", "budgets", "deliveries", "effects", "events", "llm_calls", "metadata",
    "rate_limit_slots", "rate_limits", "runs", "steps", "subscriptions",
]  # fmt: skip

metadata = MetaData()

# JSON, not JSONB, on PostgreSQL: it keeps the text as written (key order included), so what `baton run`
# printed and what `baton show` reads back are the same; SQL's ->> operators read both. On SQLite it is TEXT
# holding JSON, which json_extract() reads.
Json = JSON()

runs = Table(
    "baton_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pipeline", String(200), nullable=False),
    # How to import the pattern again ("pkg.mod:name" or "/abs/file.py:name"), for resume and workers.
    Column("target", String(1000), nullable=True),
    Column("status", String(20), nullable=False),
    Column("input", Json, nullable=False),
    Column("output", Json, nullable=True),
    Column("step_names", Json, nullable=False),
    Column("current_step", Integer, nullable=True),
    Column("current_attempt", Integer, nullable=False, default=0),
    Column("current_started_at", DateTime, nullable=True),
    Column("failed_step", String(100), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # How many times the run was claimed (started or resumed); a resume claims only the version it planned from.
    Column("claims", Integer, nullable=False, default=0),
    # Who is executing the run ("host:pid:start") and until when that claim holds without a heartbeat.
    Column("owner", String(200), nullable=True),
    Column("lease_expires_at", DateTime, nullable=True),
    Column("tokens_in", Integer, nullable=False, default=0),
    Column("tokens_out", Integer, nullable=False, default=0),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    # When a person last resumed or retried it (started_at stays its first start): its duration counts from here.
    Column("resumed_at", DateTime, nullable=True),
    Column("cost_usd", Float, nullable=True, default=0.0, server_default="0"),
    # Tokens of the input's JSON, when a model reads it (the first step is an agent).
    Column("input_boundary_tokens", Integer, nullable=True),
    # Where the run's steps execute ("local" or "celery"): what resume hands it back to.
    Column("runtime", String(50), nullable=False, default="local", server_default="local"),
    # The chain of runs and events this run belongs to (its own id when nothing started it), and the event
    # whose delivery started it.
    Column("correlation_id", String(32), nullable=True),
    Column("trigger_event", String(32), nullable=True),
    # The pattern's kind (`Pattern.kind`): how the dashboard lays the steps out without importing the code.
    Column("kind", String(20), nullable=True),
    # The step a person approved last (see `approval=True`); a rewind before it asks again.
    Column("approved_step", Integer, nullable=True),
    # A celery run whose step waits out a retry's countdown: when it is due to move again. Until then (plus
    # BATON_REQUEUE_AFTER) the sweeper does not take its quiet for a lost message.
    Column("wake_at", DateTime, nullable=True),
    # Ids begin with the creation time, so (status, id) and (pipeline, id) list newest first without a sort.
    # Partial: most runs end succeeded and are found by id; the index serves the rare statuses (running for
    # the reaper, failed for people) and costs nothing when a run succeeds.
    Index(
        "ix_baton_runs_status",
        "status",
        "id",
        sqlite_where=text("status <> 'succeeded'"),
        postgresql_where=text("status <> 'succeeded'"),
    ),
    Index("ix_baton_runs_pipeline", "pipeline", "id"),
    # The dashboard's "failed at step" filter; only failed runs have a failed step, so the index stays small.
    Index(
        "ix_baton_runs_failed_step",
        "failed_step",
        "id",
        sqlite_where=text("failed_step IS NOT NULL"),
        postgresql_where=text("failed_step IS NOT NULL"),
    ),
    Index("ix_baton_runs_correlation", "correlation_id"),
    sqlite_with_rowid=False,
)

# One row per step that has finished at least one attempt; a step with no row is pending (or running, when
# it is the run's current_step).
steps = Table(
    "baton_steps",
    metadata,
    Column("run_id", String(32), ForeignKey("baton_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("output", Json, nullable=True),
    Column("error_type", String(200), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_traceback", Text, nullable=True),
    Column("tokens_in", Integer, nullable=False, default=0),
    Column("tokens_out", Integer, nullable=False, default=0),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("cost_usd", Float, nullable=True, default=0.0, server_default="0"),
    # Tokens of the output's JSON: what the next step is fed (measured where a model reads or writes it).
    Column("boundary_tokens", Integer, nullable=True),
    # For a model's invalid answer: the text it gave and the contract's errors.
    Column("error_raw", Text, nullable=True),
    Column("error_details", Json, nullable=True),
    # Which worker executes the step right now, and until when without a heartbeat (the celery runtime: two
    # workers never run the same step of a run at once). NULL when nobody holds it.
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", DateTime, nullable=True),
    # Partial: only steps a worker holds right now, which its heartbeat finds by owner.
    Index(
        "ix_baton_steps_lease",
        "lease_owner",
        sqlite_where=text("lease_owner IS NOT NULL"),
        postgresql_where=text("lease_owner IS NOT NULL"),
    ),
    sqlite_with_rowid=False,
)

# Every failed attempt, kept after a later attempt succeeds, so a flaky step leaves a trail.
attempts = Table(
    "baton_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("baton_runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_idx", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("error_type", String(200), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("error_traceback", Text, nullable=True),
    Column("retried", Boolean, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=False),
    Index("ix_baton_attempts_run", "run_id", "step_idx"),
)

# Every call of a model: the usage, latency and cost that a step's and a run's totals add up.
llm_calls = Table(
    "baton_llm_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("baton_runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_idx", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("provider", String(100), nullable=False),
    Column("model", String(200), nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("cost_usd", Float, nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("error", Text, nullable=True),
    Column("started_at", DateTime, nullable=False),
    Index("ix_baton_llm_calls_run", "run_id", "step_idx"),
)

# Events, written in the same transaction as the checkpoint of the step that emitted them (an outbox): an
# event not yet handed to its subscribers has no `dispatched_at`, and is dispatched again after a crash.
events = Table(
    "baton_events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("type", String(200), nullable=False),
    Column("payload", Json, nullable=False),
    Column("correlation_id", String(32), nullable=False),
    Column("source_run", String(32), nullable=True),
    Column("source_step", Integer, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("dispatched_at", DateTime, nullable=True),
    # Where its subscribers' runs execute: the emitting run's runtime, or the one it was published for.
    Column("runtime", String(50), nullable=False, default="local", server_default="local"),
    # Dispatches that failed (the broker, the database, a bug), the last one's error, and when the next may
    # try: after `baton.events.MAX_TRIES` the event's undelivered subscribers get a dead letter instead.
    Column("tries", Integer, nullable=False, default=0, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("retry_at", DateTime, nullable=True),
    Index("ix_baton_events_correlation", "correlation_id"),
    Index(
        "ix_baton_events_outbox",
        "created_at",
        sqlite_where=text("dispatched_at IS NULL"),
        postgresql_where=text("dispatched_at IS NULL"),
    ),
)

# Who subscribes to what, as the processes that dispatch events have declared it: an event is handed over
# only when every subscriber recorded here has its delivery, and a process that does not know a subscriber
# imports it from its target.
subscriptions = Table(
    "baton_subscriptions",
    metadata,
    Column("event_type", String(200), primary_key=True),
    Column("subscriber", String(200), primary_key=True),
    Column("target", String(1000), nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

# One row per (event, subscriber): the subscriber handles an event once, in the run `run_id`; its status is
# that run's. `deliveries` counts how many runs it took (a replay starts another).
deliveries = Table(
    "baton_deliveries",
    metadata,
    Column("event_id", String(32), ForeignKey("baton_events.id", ondelete="CASCADE"), primary_key=True),
    Column("subscriber", String(200), primary_key=True),
    Column("run_id", String(32), nullable=True),
    Column("deliveries", Integer, nullable=False, default=0, server_default="0"),
    # Why the event could not be handed to the subscriber at all (its payload no longer fits its input).
    Column("error", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# The side effects of steps declared `side_effect=True` (see `baton.effect`): one row per idempotency key,
# written before the effect ("started") and after it ("done", with what it returned), each in its own
# transaction, so that a retry, a redelivery or a resume finds it and does not act twice.
effects = Table(
    "baton_effects",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("run_id", String(32), ForeignKey("baton_runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_idx", Integer, nullable=False),
    Column("name", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    # The process that claimed it: while that process lives (and is not the one asking), it is in progress.
    Column("owner", String(200), nullable=True),
    Column("result", Json, nullable=True),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True),
    # The JSON schema of what the act returns, when the step uses it (`returns=`): a person's result is
    # checked against it without importing the step's code. NULL: the result is not used.
    Column("result_schema", Json, nullable=True),
    Index("ix_baton_effects_run", "run_id"),
)

# Budgets on model spend (see `baton.Budget`): a run's own, keyed by its id, and an event chain's, keyed
# "chain:<correlation id>". A call holds its worst case (`held_*`) before it is made, in a conditional update
# that no two processes can both pass past the limit, and settles it (`spent_*`) once it is answered.
budgets = Table(
    "baton_budgets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tokens", Integer, nullable=True),
    Column("usd", Float, nullable=True),
    Column("spent_tokens", Integer, nullable=False, default=0, server_default="0"),
    Column("spent_usd", Float, nullable=False, default=0.0, server_default="0"),
    Column("held_tokens", Integer, nullable=False, default=0, server_default="0"),
    Column("held_usd", Float, nullable=False, default=0.0, server_default="0"),
    Column("updated_at", DateTime, nullable=False),
)

# What each call in flight holds against each budget it is held against, so that a hold is given back once:
# by its call when it answers, or by whoever takes the call's step or run over (a resume, a celery worker
# taking over a dead one's step), when that process will never settle it.
budget_holds = Table(
    "baton_budget_holds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("budget_id", String(40), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("step_idx", Integer, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("usd", Float, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_baton_budget_holds_run", "run_id", "step_idx"),
)

# Rate limits on model calls (`baton.limit`), shared by every process on this store: one row per limit (its
# target, and for a per-key limit the key's fingerprint), locked while a call takes capacity. Times are
# seconds since the epoch: when a request and a token are next due (GCRA's theoretical arrival times), and
# until when a 429 holds every call back.
rate_limits = Table(
    "baton_rate_limits",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("requests_due", Float, nullable=True),
    Column("tokens_due", Float, nullable=True),
    Column("blocked_until", Float, nullable=True),
)

# The calls in flight under a limit with a concurrency cap, each until its lease runs out (renewed while the
# call runs; a process that died gives its slots back when they run out).
rate_limit_slots = Table(
    "baton_rate_limit_slots",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("holder", String(32), primary_key=True),
    Column("expires_at", Float, nullable=False),
)
