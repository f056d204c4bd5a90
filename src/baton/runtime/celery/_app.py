"""The Celery app of a baton process: configured from `Settings`, never from `os.environ` directly."""

from __future__ import annotations

import functools

import celery

from baton._urls import mask_url
from baton.errors import BrokerUnavailable
from baton.settings import Settings, current_settings

__all__ = ["QUEUE", "broker_display", "celery_app", "check_broker", "worker_argv"]

QUEUE = "baton"


def celery_app(settings: Settings | None = None) -> celery.Celery:
    """The Celery app for `settings` (default: this process's), one per process and settings."""
    return _app_for(settings or current_settings())


@functools.cache
def _app_for(settings: Settings) -> celery.Celery:
    from baton.runtime.celery._tasks import register_tasks  # the tasks need the app; the app, its tasks

    app = celery.Celery("baton", set_as_current=False)
    worker = settings.worker
    transport = {
        "visibility_timeout": worker.visibility_timeout,
        # Kombu looks for messages past their visibility timeout every interval x throttle seconds (100 s by
        # default); a sweep every quarter of the timeout (at most 10 s) brings a lost worker's step back in
        # about the timeout, not minutes after it.
        "unacked_restore_interval": max(1.0, min(10.0, worker.visibility_timeout / 4)),
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        broker_url=worker.broker_url,
        # Chords count their finished members in the result backend; baton never waits on results.
        result_backend=worker.result_backend or worker.broker_url,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
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


# Forgets every app made so far (tests that change the broker between runs).
celery_app.cache_clear = _app_for.cache_clear  # type: ignore[attr-defined]


def worker_argv(*, concurrency: int, pool: str, loglevel: str) -> list[str]:
    """The arguments `baton worker` starts Celery's worker with."""
    return [
        "worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}", f"--queues={QUEUE}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
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
