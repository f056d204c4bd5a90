"""Fixtures of the tests that start worker processes: a broker of their own (a Redis database, or a RabbitMQ
virtual host), their environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import _services_optional
from tests.integration.serving import free_port
from tests.integration.workers import REDIS_URL, Workers, empty_rabbitmq, use_broker


@pytest.fixture
def broker(request) -> Iterator[str]:
    """The workers' broker: a Redis database of the tests' own, emptied before and after; or, for a test
    parametrized with `broker="rabbitmq"` (indirect), the tests' RabbitMQ virtual host (chords count in Redis)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield request.getfixturevalue("rabbitmq") if getattr(request, "param", "redis") == "rabbitmq" else REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def rabbitmq() -> Iterator[str]:
    """A RabbitMQ virtual host of the tests' own (made when missing), its queue deleted before and after."""
    try:
        url = empty_rabbitmq()
    except OSError as exc:
        if _services_optional():
            pytest.skip(f"RabbitMQ is not reachable: {exc}")
        raise
    yield url
    empty_rabbitmq()


@pytest.fixture
def env(postgres_url, broker, tmp_path) -> dict[str, str]:
    control = tmp_path / "control"
    control.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    environment |= {
        "BATON_DATABASE_URL": postgres_url,
        "BATON_TEST_DIR": str(control),
        # Short, so that a message whose whole worker vanished comes back within the test, and a duplicate
        # delivery waits out a lease in seconds.
        "BATON_VISIBILITY_TIMEOUT": "4",
        "BATON_LEASE_SECONDS": "4",
        "BATON_TEST_NETGUARD_LOG": os.environ["BATON_TEST_NETGUARD_LOG"],
    }
    use_broker(environment, broker)
    return environment


@pytest.fixture
def workers(env, tmp_path) -> Iterator[Workers]:
    pool = Workers(env, tmp_path)
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """The OpenAI-compatible server of llama-cpp-python, running the embedded model on loopback."""
    from baton.providers.local import model_path

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model_path(), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except OSError:
            assert proc.poll() is None, "the llama.cpp server exited"
            assert time.monotonic() < deadline, "the llama.cpp server did not start"
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(30)
