"""Rate limits: what they cost a call, and how much of a rate processes sharing it get.

    python bench/ratelimits.py [--redis URL] [--postgres URL] [--seconds S] [--rpm N] [--processes P]

Prints, for each backend (a SQLite file in a temporary folder; Redis and PostgreSQL when given):

- the cost of `limits_for` when nothing is declared (every model call pays it) and when limits are;
- the time `within_limits` adds to a call that never waits (one backend round trip before, one after);
- P processes of 20 waiting calls each sharing one `rpm` limit for S seconds: the rate they got together
  from the third second (the first burst spent), as a share of the limit, and the most calls any one-second
  window saw (the first holds the burst: a second's worth more).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
import uuid

from baton.ratelimits import Backend, clear_limits, limit, limits_for, within_limits
from baton.ratelimits.backends.redis import RedisBackend
from baton.ratelimits.backends.store import StoreBackend
from baton.settings import Settings
from baton.store import RunStore


def backend(kind: str, url: str) -> Backend:
    return RedisBackend(url, lease=30) if kind == "redis" else StoreBackend(RunStore(url), lease=30)


def lookups() -> None:
    settings, n = Settings(), 200_000
    clear_limits()
    t0 = time.perf_counter()
    for _ in range(n):
        limits_for("openai", "gpt-4o-mini", settings=settings)
    none = (time.perf_counter() - t0) / n * 1e9
    t0 = time.perf_counter()
    for _ in range(n // 10):
        limits_for("openai", "gpt-4o-mini")
    from_env = (time.perf_counter() - t0) / (n // 10) * 1e9
    limit("openai:gpt-4o-mini", rpm=500)
    limit("openai", concurrent=8)
    t0 = time.perf_counter()
    for _ in range(n):
        limits_for("openai", "gpt-4o-mini", settings=settings)
    some = (time.perf_counter() - t0) / n * 1e9
    clear_limits()
    reading = f"{from_env:.0f} ns reading the settings"
    print(f"limits_for: none declared {none:.0f} ns ({reading}), two declared {some:.0f} ns")


def overhead(kind: str, url: str, calls: int = 300) -> float:
    shared = backend(kind, url)
    limits = [limit("openai", rpm=10_000_000, tpm=10_000_000, concurrent=1000, per_key=True)]
    key = uuid.uuid4().hex[:16]

    async def call() -> int:
        return 0

    async def main() -> float:
        await within_limits(limits, tokens=100, key=key, backend=shared, call=call, used=int)  # connect first
        t0 = time.perf_counter()
        for _ in range(calls):
            await within_limits(limits, tokens=100, key=key, backend=shared, call=call, used=int)
        return (time.perf_counter() - t0) / calls * 1e6

    return asyncio.run(main())


def _hammer(kind: str, url: str, rpm: int, key: str, seconds: float, queue: multiprocessing.Queue) -> None:
    shared = backend(kind, url)
    limits = [limit("openai:gpt-4o-mini", rpm=rpm, per_key=True)]
    starts: list[float] = []

    async def call() -> int:
        starts.append(time.time())
        await asyncio.sleep(0.005)
        return 0

    async def waiter(deadline: float) -> None:
        while time.time() < deadline:
            await within_limits(limits, tokens=0, key=key, backend=shared, call=call, used=int)

    async def main() -> None:
        deadline = time.time() + seconds
        await asyncio.gather(*(waiter(deadline) for _ in range(20)))

    asyncio.run(main())
    queue.put(starts)


def shared_rate(kind: str, url: str, rpm: int, processes: int, seconds: float) -> tuple[float, int]:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    key = uuid.uuid4().hex[:16]
    procs = [context.Process(target=_hammer, args=(kind, url, rpm, key, seconds, queue)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    starts = sorted(t for _ in procs for t in queue.get())
    for proc in procs:
        proc.join()
    # From the third second: the first burst's calls, on a slow backend, may start in the second one.
    steady = [t for t in starts if starts[0] + 2.0 <= t < starts[0] + seconds]
    got = len(steady) / (seconds - 2.0) * 60 / rpm
    j, most = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return got, most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="e.g. redis://127.0.0.1:6379/12")
    parser.add_argument("--postgres", help="an existing database, e.g. postgresql://postgres@127.0.0.1/bench")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    lookups()
    backends = [("sqlite", f"sqlite:///{tempfile.mkdtemp()}/bench.db")]
    if args.redis:
        backends.append(("redis", args.redis))
    if args.postgres:
        backends.append(("postgres", args.postgres))
    for kind, url in backends:
        if kind != "redis":
            RunStore(url).close()
        added = overhead(kind, url)
        got, most = shared_rate(kind, url, args.rpm, args.processes, args.seconds)
        print(
            f"{kind}: {added:.0f} µs added to a call that never waits; {args.processes} processes sharing "
            f"rpm={args.rpm} got {got:.1%} of it; at most {most} calls in a second ({args.rpm / 60:.0f} a second)"
        )


if __name__ == "__main__":
    main()
