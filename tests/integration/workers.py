"""Real `baton worker` processes for the tests, their brokers, and waiting for what they do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import amqp
import pytest
from kombu.utils.url import url_to_parts

from baton.runtime.celery import QUEUE
from tests.parallel import redis_url_of_this_worker

__all__ = [
    "BROKERS", "RABBITMQ_URL", "REDIS_URL", "Workers", "on_both_brokers", "empty_rabbitmq", "use_broker",
    "wait_for_file",
]  # fmt: skip

# This xdist worker's own database: BATON_TEST_REDIS_URL's for gw0, the next one for gw1 (tests/parallel.py).
REDIS_URL = redis_url_of_this_worker(os.environ.get("BATON_TEST_REDIS_URL", "redis://127.0.0.1:6379/7"))
# A virtual host of the tests' own on the machine's RabbitMQ (guest/guest), made when missing. One for all the
# xdist workers: the tests that use RabbitMQ all run on one worker (tests/parallel.py).
RABBITMQ_URL = os.environ.get("BATON_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/baton_test")

BROKERS = ["redis", "rabbitmq"]
# A test that takes `env` (or `broker`) runs once on each broker.
on_both_brokers = pytest.mark.parametrize("broker", BROKERS, indirect=True)


def use_broker(env: dict[str, str], url: str) -> None:
    """Point the processes started with `env` at the broker `url` (chords count in Redis on RabbitMQ)."""
    env["BATON_BROKER_URL"] = url
    if url.startswith("amqp"):
        env["BATON_RESULT_BACKEND"] = REDIS_URL
    else:
        env.pop("BATON_RESULT_BACKEND", None)


def empty_rabbitmq() -> str:
    """The tests' RabbitMQ virtual host, made if missing, with baton's queue (and its messages) deleted."""
    parts = url_to_parts(RABBITMQ_URL)
    vhost = unquote(parts.path or "/")
    options = {
        "host": f"{parts.hostname}:{parts.port or 5672}", "userid": parts.username, "password": parts.password,
        "virtual_host": vhost, "connect_timeout": 5,
    }  # fmt: skip
    try:
        conn = _amqp_connect(options)
    except amqp.exceptions.NotAllowed:  # no such virtual host yet
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
        grant = ["rabbitmqctl", "set_permissions", "-p", vhost, str(parts.username), ".*", ".*", ".*"]
        subprocess.run(grant, check=True, capture_output=True)
        conn = _amqp_connect(options)
    try:
        conn.channel().queue_delete(QUEUE)
    finally:
        conn.close()
    return RABBITMQ_URL


def _amqp_connect(options: dict) -> amqp.Connection:
    conn = amqp.Connection(**options)
    conn.connect()
    return conn


class Workers:
    """`baton worker` processes, each in a process group of its own so that it can be killed whole."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, concurrency: int = 2, pool: str = "prefork", imports: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker-{len(self.procs)}.log"
        extra = [arg for module in imports for arg in ("--import", module)]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "baton",
                "worker",
                "-c",
                str(concurrency),
                "--pool",
                pool,
                "--loglevel",
                "info",
                *extra,
            ],
            env=self.env,
            stdout=open(log, "wb"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while b" ready." not in log.read_bytes():
            assert proc.poll() is None, f"the worker exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"the worker did not start: {log.read_text()}"
            time.sleep(0.05)
        return proc

    def group_of(self, pid: int) -> subprocess.Popen[bytes]:
        group = os.getpgid(pid)
        return next(p for p in self.procs if p.pid == group)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("worker-*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def wait_for_file(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)
    time.sleep(0.05)  # let the writer finish the file
    return path.read_text()
