"""Limits shared by real processes, on each backend (Redis, a SQLite file, PostgreSQL): together they keep to
a rate and a cap, a 429 one of them gets holds them all back, and a dead one's slot comes back."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from baton import TransientProviderError
from baton.ratelimits import Backend, Limit, Rate, clear_limits, limit, within_limits
from baton.ratelimits.backends.redis import PREFIX, RedisBackend
from baton.ratelimits.backends.store import StoreBackend
from baton.store import RunStore
from tests.conftest import POSTGRES_ADMIN_URL, _services_optional
from tests.parallel import redis_url_of_this_worker

# Only this database of the machine's Redis: other tests use others.
# A database of each xdist worker's own (12, and 13 for the second): a test empties what it used.
LIMITS_REDIS_URL = redis_url_of_this_worker(os.environ.get("BATON_TEST_LIMITS_REDIS_URL", "redis://127.0.0.1:6379/12"))


@dataclass(frozen=True)
class Shared:
    """Where the processes of a test share their limits; each process makes its own backend there."""

    kind: str
    url: str

    def backend(self, lease: float = 5.0) -> Backend:
        if self.kind == "redis":
            return RedisBackend(self.url, lease=lease)
        return StoreBackend(RunStore(self.url), lease=lease)


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory) -> str:
    """One SQLite store for the module's tests (each test's limits are its own, see `key`)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('limits')}/baton.db"
    RunStore(url).close()
    return url


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """One PostgreSQL database for the module's tests: made and migrated once, not once a test."""
    name = f"baton_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if _services_optional():
            pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    RunStore(url).close()
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["redis", "sqlite", "postgres"])
def shared(request) -> Iterator[Shared]:
    if request.param == "redis":
        client = redis.Redis.from_url(LIMITS_REDIS_URL)
        try:
            client.ping()
        except redis.ConnectionError as exc:
            if _services_optional():
                pytest.skip(f"Redis is not reachable at {LIMITS_REDIS_URL}: {exc}")
            raise
        yield Shared("redis", LIMITS_REDIS_URL)
        for key in client.scan_iter(f"{PREFIX}*"):
            client.delete(key)
        client.close()
        return
    yield Shared("store", request.getfixturevalue("sqlite_file" if request.param == "sqlite" else "postgres_database"))


@pytest.fixture
def key() -> Iterator[str]:
    """The API key fingerprint of a test's calls: its limits' state is its own, whatever ran before."""
    clear_limits()
    yield uuid.uuid4().hex[:16]
    clear_limits()


def in_processes(tmp_path: Path, *work: Callable[[], Any]) -> list[Any]:
    """Run each of `work` in a process of its own (forked, so it starts at once); what each returned."""
    context = multiprocessing.get_context("fork")
    outputs = [tmp_path / f"out-{uuid.uuid4().hex}.json" for _ in work]
    procs = [context.Process(target=_child, args=(fn, out)) for fn, out in zip(work, outputs, strict=True)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0, f"a process failed (exit code {proc.exitcode})"
    return [json.loads(out.read_text()) for out in outputs]


def _child(fn: Callable[[], Any], out: Path) -> None:
    out.write_text(json.dumps(fn()))


def calls_for(shared: Shared, limits: list[Limit], key: str, *, waiters: int, seconds: float, lasting: float):
    """In one process: `waiters` calls at a time, one after the other, for `seconds`; each call's span."""

    def work() -> list[tuple[float, float]]:
        backend = shared.backend()
        spans: list[tuple[float, float]] = []

        async def call() -> int:
            began = time.time()
            await asyncio.sleep(lasting)
            spans.append((began, time.time()))
            return 0

        async def waiter(deadline: float) -> None:
            while time.time() < deadline:
                await within_limits(limits, tokens=0, key=key, backend=backend, call=call, used=lambda n: n)

        async def main() -> None:
            deadline = time.time() + seconds
            await asyncio.gather(*(waiter(deadline) for _ in range(waiters)))

        asyncio.run(main())
        return spans

    return work


def test_processes_sharing_a_rate_keep_to_it_together_and_use_nearly_all_of_it(shared, key, tmp_path):
    rpm = 3000
    limits = [limit("openai:gpt-4o-mini", rpm=rpm, per_key=True)]
    work = calls_for(shared, limits, key, waiters=10, seconds=1.6, lasting=0.005)
    starts = sorted(began for spans in in_processes(tmp_path, work, work) for began, _ in spans)
    # Never more than GCRA allows in any window: the burst, then one call a period. A call starts when the
    # backend's answer reaches it, up to a round trip after its turn (a tenth of a second here, on a busy
    # machine); that is what the guard second of `Rate.per_minute` is for.
    pace = Rate.per_minute(rpm)
    for i, first in enumerate(starts):
        for j in range(i + 1, len(starts)):
            assert j - i + 1 <= pace.burst + (starts[j] - first + 0.1) / pace.period
    # Once the first burst is spent, most of the rate (3,000 a minute is 50 a second): loosely, since the
    # suite runs on a loaded machine; bench/ratelimits.py and bench/limits.py measure the share.
    steady = [t for t in starts if starts[0] + 0.4 <= t < starts[0] + 1.6]
    assert len(steady) >= 0.7 * (rpm / 60) * 1.2, len(steady)


def test_processes_sharing_a_cap_never_have_more_calls_in_flight_together(shared, key, tmp_path):
    limits = [limit("openai", concurrent=3, per_key=True)]
    # Calls long beside a backend's round trip (on a busy machine, tens of milliseconds), as model calls are.
    work = calls_for(shared, limits, key, waiters=5, seconds=1.0, lasting=0.15)
    spans = [span for spans in in_processes(tmp_path, work, work) for span in spans]
    # Ends before starts at the same instant: a call that ended gave its slot back.
    events = sorted([(began, 1) for began, _ in spans] + [(ended, -1) for _, ended in spans])
    in_flight = most = 0
    for _, change in events:
        in_flight += change
        most = max(most, in_flight)
    assert most == 3, most
    assert len(spans) >= 0.5 * 3 * 1.0 / 0.15, len(spans)  # the cap is used, not just kept


def test_a_429_one_process_gets_holds_back_every_process_sharing_the_limit(shared, key, tmp_path):
    limits = [limit("openai:gpt-4o-mini", rpm=6000, per_key=True)]

    async def refused() -> int:
        raise TransientProviderError("openai", "slow down", status=429, retry_after=0.5)

    def one_call() -> float:
        async def call() -> float:
            return time.time()

        return asyncio.run(within_limits(limits, tokens=0, key=key, backend=shared.backend(), call=call, used=int))

    with pytest.raises(TransientProviderError):
        asyncio.run(
            within_limits(limits, tokens=0, key=key, backend=shared.backend(), call=refused, used=int, max_refusals=0)
        )
    refused_at = time.time()
    other, again = in_processes(tmp_path, one_call, one_call)
    assert other >= refused_at + 0.4 and again >= refused_at + 0.4


def test_a_dead_processs_slot_comes_back_when_its_lease_runs_out(shared, key, tmp_path):
    limits = [limit("openai", concurrent=1, per_key=True)]
    holding = tmp_path / "holding"

    def hold_forever() -> None:
        async def call() -> int:
            holding.touch()
            await asyncio.sleep(600)
            return 0

        backend = shared.backend(lease=0.6)
        asyncio.run(within_limits(limits, tokens=0, key=key, backend=backend, call=call, used=int))

    holder = multiprocessing.get_context("fork").Process(target=hold_forever)
    holder.start()
    deadline = time.monotonic() + 10
    while not holding.exists():
        assert time.monotonic() < deadline and holder.is_alive()
        time.sleep(0.01)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    killed = time.monotonic()

    async def call() -> float:
        return time.monotonic()

    began = asyncio.run(
        within_limits(limits, tokens=0, key=key, backend=shared.backend(lease=0.6), call=call, used=int)
    )
    assert 0.1 <= began - killed <= 2.0


def test_a_call_longer_than_the_lease_keeps_its_slot(shared, key, tmp_path):
    limits = [limit("openai", concurrent=1, per_key=True)]
    holding = tmp_path / "holding"

    def hold_past_the_lease() -> float:
        async def call() -> float:
            holding.touch()
            await asyncio.sleep(0.6)
            return time.time()

        backend = shared.backend(lease=0.2)
        return asyncio.run(within_limits(limits, tokens=0, key=key, backend=backend, call=call, used=lambda _: 0))

    def after_it() -> float:
        while not holding.exists():
            time.sleep(0.01)

        async def call() -> float:
            return time.time()

        backend = shared.backend(lease=0.2)
        return asyncio.run(within_limits(limits, tokens=0, key=key, backend=backend, call=call, used=lambda _: 0))

    ended, began = in_processes(tmp_path, hold_past_the_lease, after_it)
    assert began >= ended - 0.01
