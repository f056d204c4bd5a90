"""A model server's rate limit, declared to baton or not: 1,000 runs x 3 agent calls at 600 requests a minute.

    python bench/limits.py [--runs N] [--rpm R] [--window S] [--latency S] [--only local|celery|both]
                           [--no-compare] [--declare code|setting] [--workers W] [--concurrency C]
                           [--max-in-flight M] [--timeout S] [--postgres URL] [--broker URL]
    python bench/limits.py --runs 100 --window 6   # a quick check: well under a minute a case
    python bench/limits.py --window 1              # the same rate enforced over every second: no burst

The fake OpenAI-compatible server of `fake_openai.py` (a process of its own, so that it does not share the
measured client's GIL) answers after --latency seconds (0.05) and admits --rpm requests a minute (600),
counted over a sliding window of --window seconds (60; it admits rpm x window / 60 in any such window);
beyond, it answers 429 with `Retry-After`, the whole seconds until the window frees a slot. N runs (--runs,
1,000) of a 3-agent pipeline (`limits_app.py`: three `openai:bench-model` agents, each step under
`Retry(max_attempts=50)`, so 3 model calls a run when nothing fails) are all submitted at once
(`pattern.asubmit`, then `baton.await_run`), in cases:

- local, limit declared: the local runtime (BATON_MAX_IN_FLIGHT runs at once, a fresh SQLite file), with
  `baton.limit("openai:bench-model", rpm=R)` declared by `limits_app.py` (or, with --declare setting,
  BATON_LIMITS="openai:bench-model rpm=R" in the environment);
- celery, limit declared: the same on W (2) `baton worker --pool threads --concurrency C` processes, a fresh
  PostgreSQL database, Redis database 13 as the broker (flushed before and after); the workers import
  `limits_app.py`, and so declare the same limit (the same environment); their logs are left in
  /tmp/baton-bench-limits-worker-*.log;
- the same two with no limit declared (unless --no-compare): the 429 storm, each 429 retried after its
  Retry-After, and the time it costs.

Each case runs in a fresh process of this script (a declared limit is the process's), after one warm-up run,
not counted: then the server's counters and window are reset. Prints, per case: the runs, the calls the server
answered, the requests it answered 429 (and their share of all requests: target under 1% with the limit
declared), the throughput as a share of the allowed rate (calls answered / (span x rpm / 60), where span runs
from the first request the server received to the last answer it sent: target at least 90%), that span, the
wall time (from the first submit to the last run's end, as the driving process saw it), and the runs that did
not succeed.

A sliding window admits a whole window's allowance at once: a burst of rpm x window / 60 calls at the start,
then as fast as the first ones leave the window. So the throughput of a short case can pass 100%, and a case
needs many more calls than one window admits (3 x runs well above rpm x window / 60) to say anything. On a
60 s window, runs that only honour Retry-After already keep up with the rate (the window frees its slots in
the bursts it admitted them); a server that enforces its rate over shorter periods (--window 1: 10 in any
second at 600 a minute) is where the 429 storm costs time.
The machine has 2 cores, shared by the server, the driving process, the workers, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from concurrency import baton_case, recorded
from fake_openai import ModelServer, server_reset, server_stats
from overhead import PgDatabases, Worker

HERE = Path(__file__).resolve().parent
APP = HERE / "limits_app.py"
STEPS = 3
MODEL = "bench-model"  # limits_app.MODEL, not imported here: importing the app would declare its limit
RPM_VARIABLE = "BENCH_LIMITS_RPM"  # limits_app.RPM_VARIABLE
TARGET_REFUSED = 0.01  # at most this share of the requests answered 429, with the limit declared
TARGET_THROUGHPUT = 0.90  # at least this share of the allowed rate, with the limit declared
WORKER_LOG = str(Path(tempfile.gettempdir()) / "baton-bench-limits-worker-{}.log")


@dataclass(frozen=True)
class Case:
    runtime: str  # local or celery
    limited: bool

    @property
    def label(self) -> str:
        return f"{self.runtime}, {'limit declared' if self.limited else 'no limit'}"


# A case's process.


def _load_app() -> Any:
    # Through baton's loader, as the workers load it: the pipeline's target is the app's path.
    from baton._loader import load_target

    return sys.modules[load_target(f"{APP}:__name__")]


async def timed_case(app: Any, store: str, runtime: str, runs: int, warmup: int, timeout: float) -> dict[str, Any]:
    """`warmup` runs, the server reset, then `runs` runs all at once; what they did, and what the server did."""
    server = os.environ["BATON_OPENAI_BASE_URL"].removesuffix("/v1")
    warm = await baton_case(app, store, runtime, warmup, 0, min(timeout, 120)) if warmup else {}
    server_reset(server)
    result = await baton_case(app, store, runtime, runs, 0, timeout)
    result["server"] = server_stats(server)
    result["warmup_ended"] = warm.get("ended", {})
    return result


def run_case(argv: list[str]) -> None:
    """A case's process: run it, write its result as JSON to the file --out names."""
    parser = argparse.ArgumentParser(prog="limits.py _case")
    parser.add_argument("runtime", choices=["local", "celery"])
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    app = _load_app()
    result = asyncio.run(timed_case(app, args.store, args.runtime, args.runs, args.warmup, args.timeout))
    Path(args.out).write_text(json.dumps(result))
    if result["ended"].get("(still going)"):
        os._exit(0)  # runs still going would keep this process waiting for them at exit


# The benchmark: the server, a process per case (and its workers), the table.


def case_env(case: Case, args: argparse.Namespace, store: str) -> dict[str, str]:
    """The environment of a case's process and of its workers: its store, and its limit if declared."""
    env = dict(os.environ, BATON_DATABASE_URL=store)
    env.pop(RPM_VARIABLE, None)
    env.pop("BATON_LIMITS", None)
    if case.limited and args.declare == "code":
        env[RPM_VARIABLE] = str(args.rpm)
    elif case.limited:
        env["BATON_LIMITS"] = f"openai:{MODEL} rpm={args.rpm}"
    return env


def run_one(case: Case, args: argparse.Namespace, databases: PgDatabases, tmp: Path) -> dict[str, Any]:
    """Run `case` in a fresh process (with its store, and its workers for celery); its result."""
    store = databases.new() if case.runtime == "celery" else f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
    env = case_env(case, args, store)
    out = tmp / f"{uuid.uuid4().hex}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "_case", case.runtime, "--runs", str(args.runs)]
    argv += ["--warmup", str(args.warmup), "--timeout", str(args.timeout), "--store", store, "--out", str(out)]
    broker = redis.Redis.from_url(args.broker)
    workers: list[Worker] = []
    try:
        if case.runtime == "celery":
            broker.flushdb()
            command = [sys.executable, "-m", "baton", "worker", "--pool", "threads"]
            command += ["--concurrency", str(args.concurrency), "--import", str(APP)]
            workers = [Worker(command, env, Path(WORKER_LOG.format(i))) for i in range(args.workers)]
        try:
            proc = subprocess.run(argv, env=env, timeout=args.timeout + args.warmup * 120 + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError("its process was still going past the timeout") from None
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"its process failed (exit {proc.returncode}), see above")
        result = json.loads(out.read_text())
    except Exception as exc:  # the other cases still run; the table says what happened to this one
        result = {"failed": str(exc)}
        if case.runtime == "celery":
            result["failed"] += f" (the workers' logs: {WORKER_LOG.format('*')})"
    finally:
        for worker in workers:
            worker.stop()
        if case.runtime == "celery":
            broker.flushdb()
    try:
        result["recorded"] = recorded(store)
    except (sqlite3.Error, psycopg.Error) as exc:  # a case that failed before baton made its tables
        result.setdefault("failed", f"the store cannot be read: {exc}")
    return result


def _failed_runs(result: dict[str, Any], runs: int, warmup: int) -> int:
    """The timed runs that did not end `succeeded`: as their awaiting saw them, and as the store has them at
    the end (the warm-up runs counted in)."""
    awaited = runs - result.get("ended", {}).get("succeeded", 0)
    if "recorded" not in result:
        return awaited
    stored = runs + warmup - result["recorded"].get("succeeded", 0)
    return max(0 if "failed" in result else awaited, stored)


def measures(result: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """What the table shows of a case that ran: 429s, their share, the throughput's share of the allowed rate."""
    server = result["server"]
    span = server["span"] or 0.0
    allowed = span * args.rpm / 60
    return {
        "answered": server["answered"],
        "refused": server["refused"],
        "refused_share": server["refused"] / max(1, server["requests"]),
        "throughput": server["answered"] / allowed if allowed else 0.0,
        "span": span,
        "wall": result["wall"],
    }


def print_table(args: argparse.Namespace, server_kind: str, results: dict[Case, dict[str, Any]]) -> None:
    from baton.settings import Settings

    allowed = round(args.rpm * args.window / 60)
    calls = STEPS * args.runs
    print(
        f"\n{args.runs} runs x {STEPS} agent calls ({calls} calls). Fake model ({server_kind}, a process of its own): "
        f"answers after {args.latency * 1000:.0f} ms, admits {args.rpm} a minute\n({allowed} in any {args.window:g} s, "
        f"a sliding window), 429 + Retry-After beyond: {calls} calls are {calls / args.rpm * 60:.0f} s of its "
        "allowance."
    )
    runtimes = {case.runtime for case in results}
    if "local" in runtimes:
        print(f"local: BATON_MAX_IN_FLIGHT {Settings.from_env().max_in_flight}, SQLite.")
    if "celery" in runtimes:
        print(
            f"celery: {args.workers} x baton worker --pool threads --concurrency {args.concurrency}, PostgreSQL, "
            f"{args.broker}."
        )
    print(f"limit declared: {_declared(args)}; every step Retry(max_attempts=50).")
    header = (
        f"{'case':<24} {'runs':>5} {'calls':>6} {'429s':>7} {'% reqs':>7} {'% allowed':>9} {'span s':>7} "
        f"{'wall s':>7} {'failed':>6}  targets"
    )
    print(header)
    print("-" * len(header))
    for case, result in results.items():
        if "skipped" in result:
            print(f"{case.label:<24} {'skipped':>5}  {result['skipped']}")
            continue
        failed = _failed_runs(result, args.runs, args.warmup)
        if "failed" in result:
            print(f"{case.label:<24} {args.runs:>5} {'FAILED':>6} {'':>51} {failed:>6}  {result['failed']}")
            continue
        m = measures(result, args)
        print(
            f"{case.label:<24} {args.runs:>5} {m['answered']:>6} {m['refused']:>7} {m['refused_share']:>7.1%} "
            f"{m['throughput']:>9.0%} {m['span']:>7.1f} {m['wall']:>7.1f} {failed:>6}  {_verdict(case, m, failed)}"
        )
    print(
        f"targets, with the limit declared: 429s under {TARGET_REFUSED:.0%} of the requests, throughput at least "
        f"{TARGET_THROUGHPUT:.0%} of the allowed rate, no run failed.\ncalls: the completions the server answered; "
        "429s: the requests it refused, and their share of all it received (% reqs). % allowed: calls /\n(span x rpm "
        "/ 60); span: from the first request the server received to its last answer. wall: from the first submit to "
        "the\nlast run's end, in the driving process. All after one warm-up run, not counted."
    )
    if calls <= 3 * allowed:
        print(
            f"note: {calls} calls are few beside the {allowed} a window admits at once: the throughput says little "
            "(more runs, or a lower --rpm)."
        )
    _compare(args, results)
    for case, result in results.items():
        if "failed" in result or "ended" not in result:
            continue
        if result["errors"] or _failed_runs(result, args.runs, args.warmup):
            ended, stored = dict(result["ended"]), dict(result.get("recorded", {}))
            print(f"{case.label}: ended {ended}, stored {stored}; first errors: {result['errors']}")


def _declared(args: argparse.Namespace) -> str:
    if args.declare == "code":
        return f'baton.limit("openai:{MODEL}", rpm={args.rpm}) in limits_app.py'
    return f'BATON_LIMITS="openai:{MODEL} rpm={args.rpm}"'


def _verdict(case: Case, m: dict[str, float], failed: int) -> str:
    if not case.limited:
        return "-"
    missed = []
    if m["refused_share"] >= TARGET_REFUSED:
        missed.append(f"429s < {TARGET_REFUSED:.0%}")
    if m["throughput"] < TARGET_THROUGHPUT:
        missed.append(f">= {TARGET_THROUGHPUT:.0%} of allowed")
    if failed:
        missed.append("no run failed")
    return "ok" if not missed else "MISSED " + ", ".join(missed)


def _compare(args: argparse.Namespace, results: dict[Case, dict[str, Any]]) -> None:
    """Per runtime, what not declaring the limit cost: the 429s, the wall time."""
    for runtime in ("local", "celery"):
        limited, bare = results.get(Case(runtime, True), {}), results.get(Case(runtime, False), {})
        if not ("server" in limited and "server" in bare):
            continue
        a, b = measures(limited, args), measures(bare, args)
        per_call = b["refused"] / max(1, b["answered"])
        print(
            f"{runtime}: with no limit declared, {b['refused']} requests answered 429 ({per_call:.1f} a call) "
            f"against {a['refused']}, and {b['wall'] - a['wall']:+.1f} s of wall time ({b['wall'] / a['wall']:.2f}x)."
        )


def main() -> None:
    if sys.argv[1:2] == ["_case"]:
        return run_case(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs a case, all submitted at once")
    parser.add_argument("--rpm", type=int, default=600, help="requests a minute the server admits, and the limit")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of the server's sliding window")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake model takes to answer")
    parser.add_argument("--only", choices=["local", "celery", "both"], default="both", help="the runtimes")
    parser.add_argument("--no-compare", action="store_true", help="only the cases with the limit declared")
    parser.add_argument(
        "--declare", choices=["code", "setting"], default="code", help="baton.limit(...) or BATON_LIMITS"
    )
    parser.add_argument("--workers", type=int, default=2, help="celery workers")
    parser.add_argument("--concurrency", type=int, default=64, help="each celery worker's threads")
    parser.add_argument(
        "--max-in-flight", type=int, default=None, help="BATON_MAX_IN_FLIGHT of the local runs (baton's default)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="runs before the timed ones, not counted")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds a case may take (6x the calls at the rate, + 120 s)"
    )
    parser.add_argument("--server", choices=["auto", "aiohttp", "uvicorn"], default="auto")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13", help="Redis, flushed before and after")
    args = parser.parse_args()
    if args.timeout is None:
        args.timeout = 6 * STEPS * args.runs / args.rpm * 60 + 120
    runtimes = ["local", "celery"] if args.only == "both" else [args.only]
    cases = [Case(runtime, limited) for runtime in runtimes for limited in (True, False)]
    if args.no_compare:
        cases = [case for case in cases if case.limited]

    import baton

    # The cases' processes and the workers import the same baton as this process, and find the server.
    src = str(Path(baton.__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    server = ModelServer(args.latency, args.server, rpm=args.rpm, window=args.window)
    os.environ.update(
        {"BATON_OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "dummy", "BATON_BROKER_URL": args.broker}
    )
    if args.max_in_flight is not None:
        os.environ["BATON_MAX_IN_FLIGHT"] = str(args.max_in_flight)
    databases = PgDatabases(args.postgres)
    results: dict[Case, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for case in cases:
                print(f"{case.label}: {args.runs} runs ...", file=sys.stderr, flush=True)
                results[case] = run_one(case, args, databases, Path(tmp))
    finally:
        server.stop()
        databases.drop_all()
    print_table(args, server.kind, results)


if __name__ == "__main__":
    main()
