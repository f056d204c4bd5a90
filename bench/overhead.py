"""Per-step overhead of a durable run: baton's local runtime vs a floor of bare SQL inserts.

    python bench/overhead.py [--runs N] [--postgres URL]

A 4-step pipeline of no-op steps runs N times on SQLite and on PostgreSQL. The floor does the same number
of bare INSERTs (one per step, each its own transaction, same database settings) with the plain DB-API
driver and no framework. Prints microseconds per step and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
import uuid

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


def baton_us_per_step(store: RunStore, runs: int) -> float:
    for i in range(20):  # warm caches: statement compilation, connection pool
        PIPELINE.run({"n": i}, store=store)
    t0 = time.perf_counter()
    for i in range(runs):
        run = PIPELINE.run({"n": i}, store=store)
        assert run.succeeded
    return (time.perf_counter() - t0) / (runs * STEPS) * 1e6


def sqlite_floor_us(path: str, runs: int) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE floor (run_id TEXT, idx INTEGER, output TEXT, PRIMARY KEY (run_id, idx))")
    t0 = time.perf_counter()
    for _ in range(runs):
        rid = uuid.uuid4().hex
        for idx in range(STEPS):
            con.execute("INSERT INTO floor VALUES (?, ?, ?)", (rid, idx, '{"n":1}'))
    con.close()
    return (time.perf_counter() - t0) / (runs * STEPS) * 1e6


def pg_floor_us(url: str, runs: int) -> float:
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS bench_floor")
        con.execute("CREATE TABLE bench_floor (run_id TEXT, idx INTEGER, output JSONB, PRIMARY KEY (run_id, idx))")
        t0 = time.perf_counter()
        for _ in range(runs):
            rid = uuid.uuid4().hex
            for idx in range(STEPS):
                con.execute("INSERT INTO bench_floor VALUES (%s, %s, %s)", (rid, idx, '{"n":1}'))
        elapsed = time.perf_counter() - t0
        con.execute("DROP TABLE bench_floor")
    return elapsed / (runs * STEPS) * 1e6


def fresh_pg_database(admin_url: str) -> tuple[str, str]:
    name = f"baton_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def drop_pg_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def best_of(fn, repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many rounds")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(f"sqlite:///{tmp}/bench.db")
        baton = best_of(lambda: baton_us_per_step(store, args.runs), args.repeats)
        floor = best_of(lambda: sqlite_floor_us(f"{tmp}/floor-{uuid.uuid4().hex}.db", args.runs), args.repeats)
        rows.append(("SQLite (WAL, synchronous=NORMAL)", baton, floor))
        store.close()
    url, name = fresh_pg_database(args.postgres)
    try:
        store = RunStore(url)
        baton = best_of(lambda: baton_us_per_step(store, args.runs), args.repeats)
        floor = best_of(lambda: pg_floor_us(url, args.runs), args.repeats)
        rows.append(("PostgreSQL", baton, floor))
        store.close()
    finally:
        drop_pg_database(args.postgres, name)
    print(f"\n{STEPS}-step no-op pipeline, local runtime, {args.runs} runs, best of {args.repeats}")
    print(f"{'store':<34} {'baton µs/step':>14} {'floor µs/insert':>16} {'ratio':>7}")
    for label, b, f in rows:
        print(f"{label:<34} {b:>14.1f} {f:>16.1f} {b / f:>6.2f}x")
    print(statistics.mean([1.0]) and "")


if __name__ == "__main__":
    main()
