"""The Celery app of a baton process: configured from `Settings`, never from `os.environ` directly."""

from __future__ import annotations

import functools
import os
from typing import Any

import celery

from baton._urls import mask_url
from baton.errors import BrokerUnavailable, UserError
from baton.settings import Settings, WorkerSettings, current_settings

__all__ = ["QUEUE", "broker_display", "celery_app", "check_broker", "worker_argv"]

QUEUE = "baton"

# Brokers whose URL also serves as the result backend (Celery's Redis backend counts a chord's members).
_REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel")


def celery_app(settings: Settings | None = None) -> celery.Celery:
    """The Celery app for `settings` (default: this process's), one per process and settings."""
    return _app_for(settings or current_settings())


@functools.cache
def _app_for(settings: Settings) -> celery.Celery:
    from baton.runtime.celery._tasks import register_tasks  # the tasks need the app; the app, its tasks

    app = celery.Celery("baton", set_as_current=False)
    worker = settings.worker
    app.conf.update(
        broker_url=worker.broker_url,
        # Chords count their finished members in the result backend; baton never waits on results.
        result_backend=_result_backend(settings),
        broker_transport_options=_transport_options(worker),
        result_backend_transport_options=_redis_options(worker),
        broker_connection_retry_on_startup=True,
        # RabbitMQ closes the connection of a worker that missed two of these (its machine vanished: ~20 s) and
        # gives its messages to others; the worker's loop also wakes twice as often, so a stopping worker stops
        # within seconds (Celery's 120, negotiated down to RabbitMQ's 60, made both minutes). Redis ignores it.
        broker_heartbeat=10,
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Acknowledged when done, and given back when the process running it is lost: a killed worker's
        # step runs again elsewhere. The step's lease and checkpoint make the second delivery safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Chords count their members in keys that expire with the results: a week, so that a fan-out whose
        # workers wait long in a queue still joins (a lost join is recovered by `baton resume`).
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
        task_track_started=False,
    )
    # What the tasks read their store and their hop from: the settings the app was made with.
    app.baton_settings = settings  # type: ignore[attr-defined]
    register_tasks(app)
    return app


def _result_backend(settings: Settings) -> str:
    """Where chords count their members: BATON_RESULT_BACKEND, else a Redis broker's own URL."""
    worker = settings.worker
    chosen = worker.result_backend
    if chosen:
        if _scheme(chosen) in ("rpc", "amqp", "amqps", "pyamqp"):
            # Celery 5's rpc:// backend refuses chords, and the amqp:// one is gone.
            raise UserError(
                f"BATON_RESULT_BACKEND={_scheme(chosen)}://... cannot count a supervisor's parallel branches; "
                "set it to a Redis URL (redis://HOST:6379/0)"
            )
        return chosen
    if _scheme(worker.broker_url) in _REDIS_SCHEMES:
        return worker.broker_url
    raise UserError(
        f"BATON_RESULT_BACKEND must be set when the broker is not Redis (BATON_BROKER_URL="
        f"{_scheme(worker.broker_url)}://...): a supervisor's parallel branches are counted there; set it to a "
        "Redis URL (redis://HOST:6379/0)"
    )


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def _redis_options(worker: WorkerSettings) -> dict[str, float]:
    """Kombu's Redis transport options: when a lost worker's unacknowledged message is given back."""
    return {
        "visibility_timeout": worker.visibility_timeout,
        # Kombu looks for messages past their visibility timeout every interval x throttle seconds (100 s by
        # default); a sweep every quarter of the timeout (at most 10 s) brings a lost worker's step back in
        # about the timeout, not minutes after it.
        "unacked_restore_interval": max(1.0, min(10.0, worker.visibility_timeout / 4)),
        "unacked_restore_throttle": 1,
    }


def _transport_options(worker: WorkerSettings) -> dict[str, Any]:
    """The broker's transport options: Redis's redelivery timers, or RabbitMQ's publisher confirms."""
    if _scheme(worker.broker_url) in _REDIS_SCHEMES:
        return _redis_options(worker)
    if _scheme(worker.broker_url) in ("amqp", "amqps", "pyamqp"):
        # RabbitMQ has no visibility timeout: an unacknowledged message comes back when its consumer's
        # connection closes. Confirms make a send return only once RabbitMQ holds the message (written to
        # disk: the queue is durable and the message persistent, Celery's defaults), so a run that `submit`
        # recorded is never left without its message by a broker that failed in between.
        return {"confirm_publish": True}
    return {}


# Forgets every app made so far (tests that change the broker between runs).
celery_app.cache_clear = _app_for.cache_clear  # type: ignore[attr-defined]


def worker_argv(*, concurrency: int, pool: str, loglevel: str) -> list[str]:
    """The arguments `baton worker` starts Celery's worker with."""
    return [
        "worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}", f"--queues={QUEUE}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        # A node name of its own: RabbitMQ gives a node's remote-control queue to one connection only, so a
        # second worker on this machine under Celery's default name (celery@host) would fail to start.
        f"--hostname=baton.{os.getpid()}@%h",
    ]  # fmt: skip


def broker_display(app: celery.Celery) -> str:
    """The broker's URL with its password masked, for messages and logs."""
    return mask_url(str(app.conf.broker_url or ""))


def check_broker(app: celery.Celery) -> None:
    """Fail with a clear message when the broker cannot be reached."""
    conn = app.connection_for_write()
    try:
        conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        raise BrokerUnavailable(f"cannot reach the Celery broker at {broker_display(app)}: {exc}") from None
    finally:
        conn.release()
