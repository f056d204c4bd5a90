"""What `events.py` loads in the benchmark's processes: a fast scripted model for the triage example's
agents (registered as the provider `fast`), and the signal of a chain's end.

Imported before `baton.examples.triage` (whose agents take BATON_MODEL=fast:bench when they are built).
When the `response` step's task ends, the worker pushes the chain's correlation id to the Redis list
`bench:events:done`, which the benchmark waits on.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
import redis
from celery import signals

from baton import ScriptedModel
from baton.providers import register_provider

DONE_KEY = "bench:events:done"

# One valid answer per agent of the example, by the name of its output contract.
ANSWERS: dict[str, dict[str, Any]] = {
    "Summary": {"summary": "The customer was charged twice and wants one charge refunded."},
    "Triage": {"category": "billing", "priority": "high", "sentiment": "negative"},
    "Reply": {"subject": "Your double charge", "body": "Thank you for telling us. We are looking at it now."},
}


class FastModel(ScriptedModel):
    """Answers each agent at once with a valid answer for its contract."""

    name = "fast"

    def __init__(self) -> None:
        super().__init__([{}], model="bench")

    def complete(self, model: str, messages: list[Any], *, schema: dict[str, Any], schema_name: str, **kw: Any) -> Any:
        """The canned answer of the contract `schema_name`."""
        self.answers = [ANSWERS[schema_name]]
        self.requests.clear()  # nothing to remember in a benchmark
        return super().complete(model, messages, schema=schema, schema_name=schema_name, **kw)


register_provider("fast", FastModel)

_client: redis.Redis | None = None
_db: psycopg.Connection | None = None


@signals.task_postrun.connect
def _signal_end(task: Any = None, args: Any = None, state: str = "", **_: Any) -> None:
    """After a task of a `response` run succeeded: push the chain's id, once the run has ended."""
    global _client, _db
    if state != "SUCCESS" or getattr(task, "name", "") != "baton.step" or not args:
        return
    if _db is None:
        _db = psycopg.connect(os.environ["BATON_DATABASE_URL"], autocommit=True)
    row = _db.execute(
        "SELECT correlation_id FROM baton_runs WHERE id = %s AND pipeline = 'response' AND status = 'succeeded'",
        (args[0],),
        prepare=True,
    ).fetchone()
    if row is not None:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["BATON_BROKER_URL"])
        _client.lpush(DONE_KEY, row[0])
