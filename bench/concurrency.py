"""1,000 runs in flight against a slow model: baton's runtimes beside the floor of the same calls made bare.

    python bench/concurrency.py [--runs N] [--latency S] [--concurrency C] [--max-in-flight M]
                                [--cases floor,sqlite,postgres,celery] [--server auto|aiohttp|uvicorn]
                                [--postgres URL] [--broker URL] [--warmup W] [--timeout S]
    python bench/concurrency.py --runs 50      # a smoke test: about half a minute

A fake OpenAI-compatible server on 127.0.0.1, in a process of its own (`fake_openai.py`: aiohttp if
installed, else uvicorn + starlette, with a listen backlog of 4096), answers every POST /v1/chat/completions
after --latency seconds (0.5) with a minimal instance of the JSON schema in the request's `response_format`
(objects with their required fields, strings, numbers and arrays within their bounds, enums, $ref/$defs,
anyOf) and a usage block. N runs (--runs, 1,000) of a 3-agent pipeline (extract -> summarise -> classify a
support ticket, see `concurrency_app.py`) go through the openai SDK (BATON_OPENAI_BASE_URL), every run submitted at once
(`pattern.asubmit`, then `baton.await_run`), on:

- local, SQLite: the local runtime, a fresh SQLite file;
- local, PostgreSQL: the local runtime, a fresh PostgreSQL database;
- celery: one `baton worker --pool threads --concurrency C` (256), a fresh PostgreSQL database, the Redis
  broker (DB 10, flushed before and after); the worker's log is left in /tmp/baton-bench-concurrency-worker.log.

The floor: the same 3 x N calls made by `asyncio.gather` over `openai.AsyncOpenAI` (N chains of 3
sequential calls, each answer parsed with its contract), with nothing recorded. Every case runs in a fresh
process of this script (and its worker in one more), after W warm-up runs (3), so that each peak RSS is its
own; the floor's process loads the contracts' module, and with it baton (about 17 MiB).

Prints, per case: the wall time from the first submit to the last run's end, runs/s, the ratio to the
ideal (3 x latency: every run in flight at once) and to the floor, the peak RSS and the CPU seconds of the
driving process (and of the worker), the completions the server answered and the most it held at once,
its CPU seconds, and the runs lost (not `succeeded` when awaited, or in the store at the end). Targets:
local within 2x the floor's wall time, celery within 3x, no run lost, peak RSS < 1 GiB.

The machine has 2 cores, shared by the server, the driving process, the worker, PostgreSQL and Redis: the
server runs apart so that its CPU is not counted against the client, but it competes for the cores. A
process whose CPU seconds come close to the wall time was the limit; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import redis
from fake_openai import ModelServer, cpu_seconds
from overhead import PgDatabases, Worker

HERE = Path(__file__).resolve().parent
APP = HERE / "concurrency_app.py"
CASES = {
    "floor": "floor: gather + AsyncOpenAI",
    "sqlite": "local, SQLite",
    "postgres": "local, PostgreSQL",
    "celery": "celery, PostgreSQL + Redis",
}
TARGETS = {"sqlite": 2.0, "postgres": 2.0, "celery": 3.0}  # wall time, at most this many times the floor's
RSS_TARGET_MIB = 1024
STEPS = 3
WORKER_LOG = Path(tempfile.gettempdir()) / "baton-bench-concurrency-worker.log"


def machine_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in ticks of all its cores (/proc/stat)."""
    user, nice, system, idle, iowait, *rest = map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:])
    busy = user + nice + system + sum(rest[:3])  # irq, softirq, steal
    return busy, busy + idle + iowait


def peak_rss_mib(pid: int) -> float:
    """Process `pid`'s peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


# The cases, each in a process of its own.


def _load_app() -> Any:
    # Through baton's loader, as the worker loads it: the pipeline's target is this file's path.
    from baton._loader import load_target

    return sys.modules[load_target(f"{APP}:__name__")]


async def _gather(jobs: list[Any], timeout: float) -> dict[str, Any]:
    """Start every job at once: the seconds until the last ended (wall), this process's CPU seconds meanwhile,
    how many of the machine's cores were busy on average (every process's), how each ended, the first errors."""
    t0, cpu, machine = time.perf_counter(), time.process_time(), machine_ticks()
    tasks = [asyncio.ensure_future(job) for job in jobs]
    done, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
    (busy, total), (busy0, total0) = machine_ticks(), machine
    cores = (busy - busy0) / max(1, total - total0) * (os.cpu_count() or 1)
    for task in pending:
        task.cancel()
    ended: Counter[str] = Counter({"(still going)": len(pending)} if pending else {})
    errors = []
    for task in done:
        if task.exception() is not None:
            ended["(error)"] += 1
            errors.append(f"{type(task.exception()).__name__}: {task.exception()}"[:300])
        else:
            ended[task.result()] += 1
    return {"wall": wall, "cpu": cpu, "cores": cores, "ended": ended, "errors": errors[:3]}


def _warmup(n: int) -> tuple[range, range]:
    """The warm-up runs: the first alone (imports, connections, the tokenizer, which `baton.tokens` loads
    without a lock: threads that load it at once can leave the process's stdout and stderr on /dev/null),
    then the others at once."""
    return range(min(n, 1)), range(1, n)


async def floor_case(app: Any, base_url: str, runs: int, warmup: int, timeout: float) -> dict[str, Any]:
    """N chains of 3 sequential calls through `openai.AsyncOpenAI`, each answer parsed with its contract."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=os.environ["OPENAI_API_KEY"], max_retries=0)
    stages = [
        (instructions, output, {"name": output.__name__, "schema": output.model_json_schema(), "strict": False})
        for _, instructions, _, output in app.STAGES
    ]

    async def chain(value: Any) -> str:
        for instructions, output, schema in stages:
            response = await client.chat.completions.create(
                model=app.MODEL,
                messages=[
                    {"role": "system", "content": instructions},
                    {"role": "user", "content": value.model_dump_json()},
                ],
                response_format={"type": "json_schema", "json_schema": schema},
                max_tokens=1024,
                temperature=0.0,
            )
            value = output.model_validate_json(response.choices[0].message.content or "")
        return "succeeded"

    for warming in _warmup(warmup):
        await _gather([chain(app.ticket(-1 - i)) for i in warming], min(timeout, 60))
    result = await _gather([chain(app.ticket(i)) for i in range(runs)], timeout)
    await client.close()
    return result


async def baton_case(app: Any, url: str, runtime: str, runs: int, warmup: int, timeout: float) -> dict[str, Any]:
    """N runs of the pipeline, all submitted at once, each awaited to its end."""
    import baton

    store = baton.RunStore(url)

    async def one(value: Any) -> str:
        run_id = await app.PIPELINE.asubmit(value, store=store, runtime=runtime)
        run = await baton.await_run(run_id, store=store)
        return run.status.value

    for warming in _warmup(warmup):
        await _gather([one(app.ticket(-1 - i)) for i in warming], min(timeout, 60))
    result = await _gather([one(app.ticket(i)) for i in range(runs)], timeout)
    store.close()
    return result


def run_case(argv: list[str]) -> None:
    """A case's process: run it, write its result as JSON to the file --out names."""
    parser = argparse.ArgumentParser(prog="concurrency.py _case")
    parser.add_argument("case", choices=list(CASES))
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--store", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    app = _load_app()
    if args.case == "floor":
        base_url = os.environ["BATON_OPENAI_BASE_URL"]
        result = asyncio.run(floor_case(app, base_url, args.runs, args.warmup, args.timeout))
    else:
        runtime = "celery" if args.case == "celery" else "local"
        result = asyncio.run(baton_case(app, args.store, runtime, args.runs, args.warmup, args.timeout))
    result["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # A file, not stdout: a library that points the process's stdout elsewhere for a while (llama.cpp's
    # loading chatter is silenced so) cannot swallow it.
    Path(args.out).write_text(json.dumps(result))
    if result["ended"].get("(still going)"):
        os._exit(0)  # what is still going may hold threads that would keep this process alive


# The benchmark: the server, a process per case, the table.


def recorded(url: str) -> Counter[str]:
    """How the runs recorded in the store at `url` stand, by status (read with the plain driver)."""
    query = "SELECT status, count(*) FROM baton_runs GROUP BY status"
    if url.startswith("sqlite:///"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return Counter(dict(con.execute(query).fetchall()))
        finally:
            con.close()
    with psycopg.connect(url) as con:
        return Counter(dict(con.execute(query).fetchall()))


def run_one(case: str, args: argparse.Namespace, server: ModelServer, databases: PgDatabases, tmp: Path) -> dict:
    """Run `case` in a fresh process (with its store, and its worker for celery); its result."""
    store = ""
    if case == "sqlite":
        store = f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
    elif case in ("postgres", "celery"):
        store = databases.new()
    env = dict(os.environ, BATON_DATABASE_URL=store) if store else dict(os.environ)
    argv = [sys.executable, str(Path(__file__).resolve()), "_case", case, "--runs", str(args.runs)]
    out = tmp / f"{case}.json"
    argv += ["--warmup", str(args.warmup), "--timeout", str(args.timeout), "--store", store, "--out", str(out)]
    worker = None
    broker = redis.Redis.from_url(args.broker)
    server.reset()
    server_cpu = server.cpu_seconds()
    try:
        if case == "celery":
            broker.flushdb()
            command = [sys.executable, "-m", "baton", "worker", "--concurrency", str(args.concurrency)]
            command += ["--pool", "threads", "--import", str(APP)]
            worker = Worker(command, env, WORKER_LOG)
            worker_cpu = cpu_seconds(worker.proc.pid)
        try:
            proc = subprocess.run(argv, env=env, timeout=args.timeout * 2 + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"its process was still going after {args.timeout * 2 + 60:.0f} s") from None
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"its process failed (exit {proc.returncode}), see above")
        result = json.loads(out.read_text())
        if worker is not None:
            result["worker_rss"] = peak_rss_mib(worker.proc.pid)
            result["worker_cpu"] = cpu_seconds(worker.proc.pid) - worker_cpu
    except Exception as exc:  # the other cases still run; the table says what happened to this one
        result = {"failed": str(exc)}
        if worker is not None:
            result["failed"] += f" (the worker's log: {WORKER_LOG})"
    finally:
        if worker is not None:
            worker.stop()
            broker.flushdb()
    result["server"] = server.stats()
    result["server_cpu"] = server.cpu_seconds() - server_cpu
    if store:
        try:
            result["recorded"] = recorded(store)
        except (sqlite3.Error, psycopg.Error) as exc:  # a case that failed before baton made its tables
            result.setdefault("failed", f"the store cannot be read: {exc}")
    return result


def main() -> None:
    if sys.argv[1:2] == ["_case"]:
        return run_case(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs a case, all submitted at once")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the fake model takes to answer")
    parser.add_argument("--concurrency", type=int, default=256, help="the celery worker's threads")
    parser.add_argument(
        "--max-in-flight", type=int, default=None, help="BATON_MAX_IN_FLIGHT of the driving process (baton's default)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="runs before the timed ones, not counted")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a case may take before it is cut")
    parser.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument("--server", choices=["auto", "aiohttp", "uvicorn"], default="auto")
    parser.add_argument(
        "--postgres", default=os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--broker", default=os.environ.get("BATON_BENCH_BROKER_URL", "redis://127.0.0.1:6379/10"))
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}: use {', '.join(CASES)}")

    server = ModelServer(args.latency, args.server)
    # Read by every case's process (settings are read from the environment when asked for).
    os.environ.update(
        {"BATON_OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "dummy", "BATON_BROKER_URL": args.broker}
    )
    if args.max_in_flight is not None:
        os.environ["BATON_MAX_IN_FLIGHT"] = str(args.max_in_flight)
    databases = PgDatabases(args.postgres)
    results: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for case in cases:
                print(f"{CASES[case]}: {args.runs} runs ...", file=sys.stderr, flush=True)
                results[case] = run_one(case, args, server, databases, Path(tmp))
    finally:
        server.stop()
        databases.drop_all()
    print_table(args, server.kind, results)


def _lost(result: dict[str, Any], runs: int, warmup: int) -> int:
    """The timed runs that did not end `succeeded`: as their awaiting saw them and, for baton, as the store
    has them at the end (the warm-up runs counted in)."""
    awaited = runs - result.get("ended", {}).get("succeeded", 0)
    if "recorded" not in result:
        return awaited
    return max(0 if "failed" in result else awaited, runs + warmup - result["recorded"].get("succeeded", 0))


def _missed(case: str, result: dict[str, Any], floor: float | None, lost: int) -> list[str]:
    """The targets `case` missed."""
    missed = []
    if case in TARGETS and floor and ("failed" in result or result["wall"] > TARGETS[case] * floor):
        missed.append(f"<= {TARGETS[case]:.0f}x floor")
    if lost:
        missed.append("no run lost")
    if max(result.get("rss", 0), result.get("worker_rss", 0)) >= RSS_TARGET_MIB:
        missed.append("peak RSS < 1 GiB")
    return missed


def _pair(driver: float, worker: float | None, form: str) -> str:
    return format(driver, form) + ("" if worker is None else f" + {format(worker, form)}")


def print_table(args: argparse.Namespace, server_kind: str, results: dict[str, dict[str, Any]]) -> None:
    from baton.settings import Settings

    ideal = STEPS * args.latency
    print(
        f"\n{args.runs} runs of a {STEPS}-agent pipeline, every model call answered after {args.latency * 1000:.0f} ms "
        f"(ideal {ideal:.2f} s). Fake model: {server_kind}, a process of its own.\nBATON_MAX_IN_FLIGHT "
        f"{Settings.from_env().max_in_flight}; celery: one worker, --pool threads --concurrency {args.concurrency}."
    )
    header = (
        f"{'case':<28} {'wall s':>6} {'runs/s':>6} {'x ideal':>7} {'x floor':>7} {'peak RSS MiB':>13} "
        f"{'CPU s':>11} {'cores':>5} {'calls':>5} {'held':>4} {'srv CPU':>7} {'lost':>4}  targets"
    )
    print(header)
    print("-" * len(header))
    floor = results.get("floor", {}).get("wall")
    for case, result in results.items():
        lost = _lost(result, args.runs, args.warmup)
        missed = _missed(case, result, floor, lost)
        verdict = "ok" if not missed else "MISSED " + ", ".join(missed)
        server = f"{result['server']['answered']:>5} {result['server']['peak']:>4} {result['server_cpu']:>7.1f}"
        if "failed" in result:
            print(f"{CASES[case]:<28} {'FAILED':>6} {'':>54} {server} {lost:>4}  {verdict}")
            continue
        wall = result["wall"]
        rss = _pair(result["rss"], result.get("worker_rss"), ".0f")
        cpu = _pair(result["cpu"], result.get("worker_cpu"), ".1f")
        versus = f"{wall / floor:.2f}" if floor else "-"
        print(
            f"{CASES[case]:<28} {wall:>6.2f} {args.runs / wall:>6.1f} {wall / ideal:>7.2f} {versus:>7} {rss:>13} "
            f"{cpu:>11} {result['cores']:>5.2f} {server} {lost:>4}  {verdict}"
        )
    print(
        f"targets: local <= {TARGETS['sqlite']:.0f}x the floor's wall time, celery <= {TARGETS['celery']:.0f}x, "
        f"no run lost, peak RSS < {RSS_TARGET_MIB} MiB.\n"
        "peak RSS, CPU s: the driving process (+ the worker); CPU s over the timed runs (the worker's over the case). "
        f"cores: of the\nmachine's {os.cpu_count()}, how many were busy on average over the timed runs (every process: "
        "the server, the databases...). calls: completions\nthe server answered in the case (warm-up runs included); "
        "held: the most it held at once; srv CPU: its CPU seconds in the case."
    )
    for case, result in results.items():
        if "failed" in result:
            print(f"{CASES[case]}: {result['failed']}; stored: {dict(result.get('recorded', {}))}")
        elif result["errors"] or _lost(result, args.runs, args.warmup):
            ended, stored = dict(result["ended"]), dict(result.get("recorded", {}))
            print(f"{CASES[case]}: ended {ended}, stored {stored}; first errors: {result['errors']}")


if __name__ == "__main__":
    main()
