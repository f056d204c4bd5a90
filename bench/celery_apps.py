"""What `overhead.py` runs on Celery workers: baton's patterns, and bare Celery tasks doing the same.

Both are loaded by the workers (`baton worker --import bench/celery_apps.py`, `python bench/celery_apps.py
bare-worker`). When the last task of a run ends (after its checkpoint is committed, for baton), the worker
pushes the run's id to the Redis list `bench:done`, which the benchmark waits on: one signal for both,
sent at the same point of each task's life, and no polling of the store or of Celery's results.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import celery
import psycopg
import redis
from celery import signals
from pydantic import BaseModel, create_model

from baton import Pipeline, Retry, Supervisor, step

STEPS = 4
FAN_OUT = 8
DONE_KEY = "bench:done"
BARE_QUEUE = "bench-bare"


class Payload(BaseModel):
    n: int


def _noop(name: str) -> Any:
    def fn(x: Payload) -> Payload:
        return x

    return step(name=name, retry=Retry(max_attempts=1))(fn)


PIPELINE = Pipeline("bench-celery", [_noop(f"s{i}") for i in range(STEPS)])


# One optional field per worker: the routing contract and the merge's input of an 8-way fan-out.
_SLOTS: dict[str, Any] = {f"w{i}": (Payload | None, None) for i in range(FAN_OUT)}
Route = create_model("Route", **_SLOTS)
Found = create_model("Found", **_SLOTS)


@step(retry=Retry(max_attempts=1))
def route(x: Payload) -> Route:  # type: ignore[valid-type]
    return Route(**{f"w{i}": x for i in range(FAN_OUT)})


@step(retry=Retry(max_attempts=1))
def merge(found: Found) -> Payload:  # type: ignore[valid-type]
    return Payload(n=sum(getattr(found, f"w{i}").n for i in range(FAN_OUT)))


FANOUT = Supervisor(
    "bench-fanout", router=route, workers={f"w{i}": _noop(f"w{i}") for i in range(FAN_OUT)}, merge=merge
)


def bare_app() -> celery.Celery:
    """A bare Celery app on the same broker, configured as baton configures its own."""
    from baton.runtime.celery import celery_app
    from baton.settings import current_settings

    ours = celery_app(current_settings())
    app = celery.Celery("bench-bare", set_as_current=False)
    app.conf.update({k: ours.conf[k] for k in (
        "broker_url", "result_backend", "broker_transport_options", "result_backend_transport_options",
        "task_serializer", "result_serializer", "accept_content", "task_acks_late", "task_reject_on_worker_lost",
        "worker_prefetch_multiplier", "broker_connection_retry_on_startup",
    )})  # fmt: skip
    app.conf.task_default_queue = BARE_QUEUE

    @app.task(name="bench.noop", ignore_result=True)
    def noop(n: int) -> int:
        return n

    @app.task(name="bench.member", ignore_result=False)
    def member(n: int) -> int:
        return n

    @app.task(name="bench.last", ignore_result=True)
    def last(n: int) -> int:
        return n

    @app.task(name="bench.join", ignore_result=True)
    def join(values: list[int]) -> int:
        return values[0]

    @app.task(name="bench.route", ignore_result=True)
    def route(n: int) -> None:
        # The bare counterpart of a router: a task that decides the members and starts their chord.
        celery.chord([member.s(n) for _ in range(FAN_OUT)])(join.s())

    return app


_client: redis.Redis | None = None
_db: psycopg.Connection | None = None


def _done(key: str) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BATON_BROKER_URL"])
    _client.lpush(DONE_KEY, key)


def _run_succeeded(run_id: str) -> bool:
    # A baton task may have executed several of a run's steps (or only a router): the store says whether the
    # run ended. The query is after the task, and is charged to baton.
    global _db
    if _db is None:
        _db = psycopg.connect(os.environ["BATON_DATABASE_URL"], autocommit=True)
    row = _db.execute("SELECT status FROM baton_runs WHERE id = %s", (run_id,), prepare=True).fetchone()
    return row is not None and row[0] == "succeeded"


@signals.task_postrun.connect
def _signal_end(task: Any = None, args: Any = None, retval: Any = None, state: str = "", **_: Any) -> None:
    if state != "SUCCESS":
        return  # a task that asked to be retried has not ended the run
    name = getattr(task, "name", "")
    # A join's arguments are (the chord's results, run id, fence); a step's begin with the run id.
    run_id = args[1] if name == "baton.join" else args[0] if name == "baton.step" else None
    if run_id is not None and _run_succeeded(run_id):
        _done(run_id)
    elif name in ("bench.last", "bench.join"):
        _done(f"bare:{retval}")


if __name__ == "__main__" and sys.argv[1:2] == ["bare-worker"]:
    from baton.runtime.celery import worker_argv

    argv = worker_argv(concurrency=2, pool="prefork", loglevel="info")
    bare_app().worker_main([a if not a.startswith("--queues") else f"--queues={BARE_QUEUE}" for a in argv])
