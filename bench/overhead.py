"""Per-step overhead of a durable run: baton's local runtime vs a floor of bare SQL inserts.

    python bench/overhead.py [--runs N] [--repeats R] [--postgres URL]

A 4-step pipeline of no-op steps runs N times on the local runtime, on SQLite and on PostgreSQL. The floor
does the same number of bare INSERTs (one per step, each its own transaction, with the same durability
settings) through the plain DB-API driver, no framework. Every round uses fresh databases, and the rounds
of baton and of the floor alternate, so that disk hiccups hit both. Prints microseconds per step (best and
median of the rounds) and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

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


def alternate(repeats: int, *rounds: Callable[[], float]) -> list[list[float]]:
    results: list[list[float]] = [[] for _ in rounds]
    for _ in range(repeats):
        for i, fn in enumerate(rounds):
            results[i].append(fn())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500, help="runs per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    parser.add_argument(
        "--postgres", default=os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
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
    finally:
        databases.drop_all()

    print(f"\n{STEPS}-step no-op pipeline, local runtime: {args.runs} runs a round, {args.repeats} rounds")
    print(f"{'store':<34} {'what':<28} {'best µs/step':>13} {'median':>8} {'ratio (median)':>15}")
    base = 0.0
    for store, what, values in rows:
        best, median = min(values), statistics.median(values)
        if what == "baton":
            base = median
            ratio = ""
        else:
            ratio = f"baton {base / median:.2f}x"
        print(f"{store:<34} {what:<28} {best:>13.1f} {median:>8.1f} {ratio:>15}")


if __name__ == "__main__":
    main()
