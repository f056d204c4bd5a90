"""Per-step overhead of a durable run: baton's local runtime vs a floor of bare SQL inserts, and baton on
Celery vs bare Celery.

    python bench/overhead.py [--runs N] [--repeats R] [--postgres URL] [--broker URL] [--no-celery]

A 4-step pipeline of no-op steps runs N times on the local runtime, on SQLite and on PostgreSQL. The floor
does the same number of bare INSERTs (one per step, each its own transaction, with the same durability
settings) through the plain DB-API driver, no framework. Every round uses fresh databases, and the rounds
of baton and of the floor alternate, so that disk hiccups hit both. Prints microseconds per step (best and
median of the rounds) and the ratio to the floor.

On Celery (Redis broker, PostgreSQL store, one worker: prefork, 2 processes), the same 4-step pipeline runs
beside a bare Celery chain of 4 no-op tasks with the same settings (late acks, prefetch 1) on the same
Redis: the latency of one run at a time, and the throughput with 200 runs in flight. baton runs it twice:
as it does by default (a task goes on with the pipeline's next step, each step claimed and checkpointed on
its own), and with BATON_CELERY_HOP=step (each step a task of its own, a broker round trip a step). Then a fan-out of 8
workers plus merge (a Supervisor) beside a bare chord started by a routing task. The workers of baton and of
bare Celery take turns, one at a time. Each end of a run is signalled by the worker through Redis (see
`celery_apps.py`), so neither side is timed by polling.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from pydantic import BaseModel

from baton import Pipeline, RunStore, step

STEPS = 4


class Payload(BaseModel):
    n: int


def noop(name: str):
    def fn(x: Payload) -> Payload:
        return x

    fn.__name__ = name
    return step(fn)


PIPELINE = Pipeline("bench-noop", [noop(f"s{i}") for i in range(STEPS)])


def baton_round(url: str, runs: int) -> float:
    store = RunStore(url)
    try:
        for i in range(20):  # warm up: prepared statements, the writer's connection
            PIPELINE.run({"n": i}, store=store)
        t0 = time.perf_counter()
        for i in range(runs):
            PIPELINE.run({"n": i}, store=store)
        elapsed = time.perf_counter() - t0
    finally:
        store.close()
    return elapsed / (runs * STEPS) * 1e6


def sqlite_floor_round(path: str, runs: int, tuned: bool = False) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    if tuned:  # the two performance pragmas baton sets on its own connections
        con.execute("PRAGMA wal_autocheckpoint=10000")
        con.execute("PRAGMA cache_size=-16000")
    con.execute("CREATE TABLE floor (run_id TEXT, idx INTEGER, output TEXT, PRIMARY KEY (run_id, idx))")
    t0 = time.perf_counter()
    for _ in range(runs):
        rid = uuid.uuid4().hex
        for idx in range(STEPS):
            con.execute("INSERT INTO floor VALUES (?, ?, ?)", (rid, idx, '{"n":1}'))
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed / (runs * STEPS) * 1e6


def pg_floor_round(url: str, runs: int) -> float:
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE TABLE bench_floor (run_id TEXT, idx INTEGER, output JSONB, PRIMARY KEY (run_id, idx))")
        t0 = time.perf_counter()
        for _ in range(runs):
            rid = uuid.uuid4().hex
            for idx in range(STEPS):
                con.execute("INSERT INTO bench_floor VALUES (%s, %s, %s)", (rid, idx, '{"n":1}'))
        elapsed = time.perf_counter() - t0
    return elapsed / (runs * STEPS) * 1e6


class PgDatabases:
    """Fresh PostgreSQL databases, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def new(self) -> str:
        name = f"baton_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as con:
            for name in self.names:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], q: float) -> float:
    """The value at quantile `q` (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def alternate(repeats: int, *rounds: Callable[[], float]) -> list[list[float]]:
    results: list[list[float]] = [[] for _ in rounds]
    for _ in range(repeats):
        for i, fn in enumerate(rounds):
            results[i].append(fn())
    return results


CELERY_APPS = Path(__file__).parent / "celery_apps.py"


class Worker:
    """A worker process (baton's or bare Celery's) in a process group of its own."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115 - the worker keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _latency(submit: Callable[[int], str], done: Callable[[set[str]], None], n: int) -> float:
    """Median seconds from submitting one run to its end, one run at a time."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        done({submit(i)})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _throughput(submit: Callable[[int], str], done: Callable[[set[str]], None], n: int) -> float:
    """Seconds for `n` runs submitted at once to all end."""
    t0 = time.perf_counter()
    done({submit(i) for i in range(n)})
    return time.perf_counter() - t0


def celery_rows(args: argparse.Namespace, databases: PgDatabases, log_dir: Path) -> list[tuple[str, str, list[float]]]:
    import celery
    import redis

    from baton._loader import load_target
    from baton.runtime.celery import celery_app

    client = redis.Redis.from_url(args.broker)
    client.flushdb()
    db_url = databases.new()
    os.environ["BATON_DATABASE_URL"] = db_url
    os.environ["BATON_BROKER_URL"] = args.broker
    celery_app.cache_clear()
    env = dict(os.environ)
    pipeline = load_target(f"{CELERY_APPS}:PIPELINE")
    fanout = load_target(f"{CELERY_APPS}:FANOUT")
    bare = load_target(f"{CELERY_APPS}:bare_app")()
    done_key = load_target(f"{CELERY_APPS}:DONE_KEY")
    store = RunStore(db_url)

    stray: list[str] = []

    def done(expected: set[str]) -> None:
        """Wait until every run in `expected` has signalled its end."""
        waiting = set(expected)
        deadline = time.monotonic() + 60
        while waiting:
            try:
                got = client.brpop(done_key, timeout=1)
            except redis.TimeoutError:  # a slow socket read is not the end of the wait
                got = None
            if got is None and time.monotonic() < deadline:
                continue
            if got is None:
                queues = {k.decode(): client.llen(k) for k in client.keys("*") if client.type(k) == b"list"}
                raise RuntimeError(f"{len(waiting)} runs did not end within 60 s; queues: {queues}")
            key = got[1].decode()
            if key in waiting:
                waiting.discard(key)
            else:
                stray.append(key)

    def baton_chain(i: int) -> str:
        return pipeline.submit({"n": i}, store=store, runtime="celery")

    def bare_chain(i: int) -> str:
        noop, last = bare.tasks["bench.noop"], bare.tasks["bench.last"]
        celery.chain(noop.s(i), noop.s(), noop.s(), last.s()).apply_async()
        return f"bare:{i}"

    def baton_fan(i: int) -> str:
        return fanout.submit({"n": i}, store=store, runtime="celery")

    def bare_fan(i: int) -> str:
        bare.tasks["bench.route"].delay(i)
        return f"bare:{i}"

    baton_argv = [sys.executable, "-m", "baton", "worker", "-c", "2", "--pool", "prefork", "--import", str(CELERY_APPS)]
    bare_argv = [sys.executable, str(CELERY_APPS), "bare-worker"]
    # The same baton worker, with each pipeline step a task of its own: a broker round trip a step, as the
    # bare chain has.
    step_env = env | {"BATON_CELERY_HOP": "step"}
    results: dict[str, list[float]] = {}
    fan_n = max(10, args.celery_runs // 10)
    try:
        for r in range(args.repeats):
            for label, argv, worker_env, chain, fan in (
                ("baton", baton_argv, env, baton_chain, baton_fan),
                ("step", baton_argv, step_env, baton_chain, baton_fan),
                ("bare", bare_argv, env, bare_chain, bare_fan),
            ):
                worker = Worker(argv, worker_env, log_dir / f"{label}-{r}.log")
                try:
                    for i in range(10):  # warm up: imports, connections, prepared statements
                        done({chain(i)})
                    done({fan(0)})
                    latency = _latency(chain, done, args.celery_runs // 4)
                    through = _throughput(chain, done, args.in_flight)
                    fan_latency = _latency(fan, done, fan_n)
                    fan_through = _throughput(fan, done, fan_n * 2)
                finally:
                    worker.stop()
                for key, value in (
                    ("latency", latency / STEPS * 1e6),
                    ("through", through / (args.in_flight * STEPS) * 1e6),
                    ("fan_latency", fan_latency * 1e3),
                    ("fan_through", fan_through / (fan_n * 2) * 1e3),
                ):
                    results.setdefault(f"{label}:{key}", []).append(value)
    finally:
        store.close()
        client.flushdb()
    if stray:
        print(f"(ignored {len(stray)} end signals of runs not waited for: {sorted(set(stray))[:5]}...)")
    return [
        ("Celery: one run at a time", "baton, µs per step", results["baton:latency"]),
        ("", "bare chain of 4 tasks", results["bare:latency"]),
        ("", "(baton, a task per step)", results["step:latency"]),
        (f"Celery: {args.in_flight} runs in flight", "baton, µs per step", results["baton:through"]),
        ("", "bare chain of 4 tasks", results["bare:through"]),
        ("", "(baton, a task per step)", results["step:through"]),
        ("Celery: fan-out 8 + merge, 1 at a time", "baton, ms per run", results["baton:fan_latency"]),
        ("", "bare chord", results["bare:fan_latency"]),
        (f"Celery: fan-out, {fan_n * 2} in flight", "baton, ms per run", results["baton:fan_through"]),
        ("", "bare chord", results["bare:fan_through"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500, help="runs per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    parser.add_argument(
        "--postgres", default=os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--broker", default=os.environ.get("BATON_BENCH_BROKER_URL", "redis://127.0.0.1:6379/8"))
    parser.add_argument("--celery-runs", type=int, default=200, help="runs timed one at a time (divided by 4)")
    parser.add_argument("--in-flight", type=int, default=200, help="runs submitted at once")
    parser.add_argument("--no-celery", action="store_true", help="only the local runtime")
    args = parser.parse_args()
    rows: list[tuple[str, str, list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:

        def fresh(kind: str) -> str:
            return f"{tmp}/{kind}-{uuid.uuid4().hex}.db"

        baton, floor, tuned = alternate(
            args.repeats,
            lambda: baton_round(f"sqlite:///{fresh('baton')}", args.runs),
            lambda: sqlite_floor_round(fresh("floor"), args.runs),
            lambda: sqlite_floor_round(fresh("tuned"), args.runs, tuned=True),
        )
        rows += [
            ("SQLite (WAL, synchronous=NORMAL)", "baton", baton),
            ("", "floor: bare INSERT", floor),
            ("", "floor with baton's pragmas", tuned),
        ]
    databases = PgDatabases(args.postgres)
    try:
        baton, floor = alternate(
            args.repeats,
            lambda: baton_round(databases.new(), args.runs),
            lambda: pg_floor_round(databases.new(), args.runs),
        )
        rows += [("PostgreSQL", "baton", baton), ("", "floor: bare INSERT", floor)]
        if not args.no_celery:
            with tempfile.TemporaryDirectory() as logs:
                rows += celery_rows(args, databases, Path(logs))
    finally:
        databases.drop_all()

    print(f"\n{STEPS}-step no-op pipeline: {args.runs} runs a round on the local runtime, {args.repeats} rounds")
    print(f"{'where':<40} {'what':<28} {'best':>10} {'median':>8} {'ratio (median)':>15}")
    base = floor = 0.0
    for store, what, values in rows:
        best, median = min(values), statistics.median(values)
        if what.startswith("baton"):
            base = median
            ratio = ""
        elif what.startswith("("):
            ratio = f"{median / floor:.2f}x bare"  # the variant against the bare baseline above it
        else:
            floor = median
            ratio = f"baton {base / median:.2f}x"
        print(f"{store:<40} {what:<28} {best:>10.1f} {median:>8.1f} {ratio:>15}")


if __name__ == "__main__":
    main()
