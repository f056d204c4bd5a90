"""The Celery app of a baton process: configured from `Settings`, never from `os.environ` directly."""

from __future__ import annotations

import difflib
import functools
import os
import re
import time
from typing import Any

import celery

from baton._urls import mask_url
from baton.errors import BrokerUnavailable, UserError
from baton.settings import Settings, WorkerSettings, current_settings
from baton.store.trouble import is_store_trouble

__all__ = [
    "QUEUE", "broker_display", "celery_app", "check_broker", "is_broker_trouble", "not_sent", "unreachable",
    "worker_argv",
]  # fmt: skip

QUEUE = "baton"

# Seconds one connection attempt to the broker or the result backend may take: a host that never answers is
# reported, not waited on for minutes.
CONNECT_TIMEOUT = 3.0
# Seconds a broker found reachable is taken to be so by `check_broker(..., recent=True)`: a loop of submits
# does not connect afresh for every run; one lost meanwhile is caught when the message is sent.
TRUSTED_FOR = 5.0

# The brokers baton runs on, by the schemes kombu knows them by: kombu's other transports have neither a
# visibility timeout nor a queue that the sweeper can measure. A Redis broker's URL also serves as the result
# backend (Celery's Redis backend counts a chord's members).
_REDIS_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel")
_RABBITMQ_SCHEMES = ("amqp", "amqps", "pyamqp")
_BROKER_SCHEMES = {"Redis": _REDIS_SCHEMES, "RabbitMQ": _RABBITMQ_SCHEMES}
# RabbitMQ's result backends pass the scheme check, for `_result_backend` to refuse with the reason (chords).
_RABBITMQ_RESULTS = ("rpc", *_RABBITMQ_SCHEMES)


def celery_app(settings: Settings | None = None) -> celery.Celery:
    """The Celery app for `settings` (default: this process's), one per process and settings."""
    return _app_for(settings or current_settings())


@functools.cache
def _app_for(settings: Settings) -> celery.Celery:
    from baton.runtime.celery._tasks import register_tasks  # the tasks need the app; the app, its tasks

    worker = settings.worker
    # Before Celery sees them (kombu answers a misspelt scheme with a KeyError traceback), and only here: a
    # process that never uses the celery runtime does not care what its broker setting says.
    _check_schemes("BATON_BROKER_URL", worker.broker_url, _BROKER_SCHEMES)
    if worker.result_backend:
        _check_schemes("BATON_RESULT_BACKEND", worker.result_backend, {"Redis": _REDIS_SCHEMES}, _RABBITMQ_RESULTS)
    app = celery.Celery("baton", set_as_current=False)
    app.conf.update(
        broker_url=worker.broker_url,
        # Chords count their finished members in the result backend; baton never waits on results.
        result_backend=_result_backend(settings),
        broker_transport_options=_transport_options(worker),
        result_backend_transport_options=_redis_options(worker),
        broker_connection_retry_on_startup=True,
        # RabbitMQ's connect timeout (Redis's is in its transport options); the result backend's, on Redis.
        broker_connection_timeout=CONNECT_TIMEOUT,
        redis_socket_connect_timeout=CONNECT_TIMEOUT,
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
        if _scheme(chosen) in _RABBITMQ_RESULTS:
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


def _check_schemes(name: str, url: str, known: dict[str, tuple[str, ...]], also: tuple[str, ...] = ()) -> None:
    """Refuse a URL (or `;`-separated failover list) whose scheme is none of `known`'s (or `also`), naming
    `name` and the schemes to use."""
    allowed = [scheme for schemes in known.values() for scheme in schemes]
    for part in url.split(";"):
        scheme, sep, _rest = part.strip().partition("://")
        if sep and scheme.lower() in (*allowed, *also):
            continue
        listed = "; ".join(f"{', '.join(s + '://' for s in schemes)} ({what})" for what, schemes in known.items())
        close = difflib.get_close_matches(scheme.lower(), allowed, n=1) if sep else []
        hint = f"did you mean {close[0]}://? " if close else ""
        what = f"unknown scheme {scheme + '://'!r}" if sep else "not a URL"
        raise UserError(f"{name}={mask_url(url)!r}: {what}; {hint}use one of {listed}")


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
        return _redis_options(worker) | {"socket_connect_timeout": CONNECT_TIMEOUT}
    if _scheme(worker.broker_url) in _RABBITMQ_SCHEMES:
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


def check_broker(app: celery.Celery, *, recent: bool = False) -> None:
    """Fail, within a second or so and in one line, when the broker or the result backend cannot be reached
    (nothing listens, a wrong password, RabbitMQ login or virtual host, a Redis database out of range).

    With `recent`, a broker found reachable in the last `TRUSTED_FOR` seconds is not looked at again.
    """
    reached = getattr(app, "_baton_reached", None)
    if recent and reached is not None and time.monotonic() - reached < TRUSTED_FOR:
        return
    _reach(app, str(app.conf.broker_url), "BATON_BROKER_URL", "broker")
    backend = str(app.conf.result_backend or "")
    if backend and backend != app.conf.broker_url:
        _reach(app, backend, "BATON_RESULT_BACKEND", "result backend")
    app._baton_reached = time.monotonic()  # type: ignore[attr-defined]


def _reach(app: celery.Celery, url: str, variable: str, what: str) -> None:
    # One retry after 0.2 s, not Celery's loop of many seconds: a blip passes, a mistake is told at once.
    conn = app.connection_for_write(url) if what == "broker" else _backend_connection(url)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, interval_max=0.2)
    except Exception as exc:
        raise BrokerUnavailable(unreachable(url, variable, exc, what=what)) from None
    finally:
        conn.release()


def _backend_connection(url: str) -> Any:
    """A connection to a Redis result backend through kombu, which knows its every scheme (sentinel too)."""
    import kombu

    return kombu.Connection(url, transport_options={"socket_connect_timeout": CONNECT_TIMEOUT})


def unreachable(url: str, variable: str, exc: BaseException, *, what: str = "broker") -> str:
    """'cannot reach the Celery broker at URL (VARIABLE): why', the URL masked and the why on one line."""
    text = str(exc).strip()
    # amqp prefixes its reasons with a "(class, method): " of zeros; redis-py ends them with a full stop.
    why = re.sub(r"^\(\d+, \d+\): ", "", text.splitlines()[0]).rstrip(".") if text else type(exc).__name__
    return f"cannot reach the Celery {what} at {mask_url(url)} ({variable}): {why}"


def not_sent(app: celery.Celery, exc: BaseException) -> str:
    """Why a message was not sent, in one line naming the broker (or the result backend, for a fan-out), and
    the next `check_broker(app, recent=True)` looks again."""
    app._baton_reached = None  # type: ignore[attr-defined]
    backend = str(app.conf.result_backend or "")
    if backend and backend != app.conf.broker_url and type(exc).__module__.startswith("redis"):
        return unreachable(backend, "BATON_RESULT_BACKEND", exc, what="result backend")
    return unreachable(str(app.conf.broker_url), "BATON_BROKER_URL", exc)


def is_broker_trouble(exc: BaseException) -> bool:
    """Whether `exc` says the broker or the result backend could not take a message (not a bug, not the store)."""
    import amqp.exceptions
    import kombu.exceptions

    kinds: tuple[type[BaseException], ...] = (
        kombu.exceptions.OperationalError, amqp.exceptions.AMQPError, ConnectionError, TimeoutError,
    )  # fmt: skip
    try:
        import redis.exceptions

        kinds += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    except ImportError:
        pass
    return isinstance(exc, kinds) and not is_store_trouble(exc)
