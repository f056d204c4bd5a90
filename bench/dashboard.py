"""The dashboard with 100,000 runs in the store: how long its pages take, as a person's browser sees them.

    python bench/dashboard.py [--runs N] [--requests M] [--backend sqlite|postgres|both] [--postgres URL]

Fills a fresh store (SQLite file, and a new PostgreSQL database) with N runs of four pipelines spread over 30
days, each with its three step rows: 95% succeeded, 3% failed at one of the steps (with a traceback), the rest
cancelled or interrupted. The rows are written straight into the tables, in bulk: what is measured is reading.
Then starts `baton serve` on loopback (a process of its own, with a token, as in production) and times M
requests of each page over HTTP, after a warm-up. Prints one table: p50, p95 and max in ms per page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from overhead import PgDatabases, percentile  # noqa: E402 - beside this file

TOKEN = "bench-dashboard-token"
PIPELINES = ["orders", "research", "triage", "billing"]
STEPS = ["extract", "summarise", "classify"]
STATUSES = [("succeeded", 0.95), ("failed", 0.98), ("cancelled", 0.99), ("interrupted", 1.01)]
FRAME = '  File "app.py", line 12, in classify\n'
TRACEBACK = "Traceback (most recent call last):\n" + FRAME * 8 + "ValueError: boom\n"


def fill(url: str, count: int, seed: int = 7) -> tuple[str, str]:
    """Write `count` runs (and their steps) into the store at `url`; returns a failed run's id and a middle id."""
    from baton.store import RunStore
    from baton.store.schema import runs, steps

    store = RunStore(url)  # migrates
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    start = now - timedelta(days=30)
    span_ms = 30 * 24 * 3600 * 1000
    stamps = sorted(rng.randrange(span_ms) for _ in range(count))
    failed_id = middle = ""
    batch_runs: list[dict] = []
    batch_steps: list[dict] = []

    def flush() -> None:
        with store.engine.begin() as c:
            c.execute(runs.insert(), batch_runs)
            c.execute(steps.insert(), batch_steps)
        batch_runs.clear()
        batch_steps.clear()

    for n, offset in enumerate(stamps):
        created = start + timedelta(milliseconds=offset)
        ms = int(created.replace(tzinfo=UTC).timestamp() * 1000)
        run_id = f"{ms:012x}{n & 0xFFFF:04x}{rng.getrandbits(64):016x}"
        roll = rng.random()
        status = next(s for s, upto in STATUSES if roll < upto)
        failed_at = rng.randrange(3) if status == "failed" else None
        if status == "failed":
            failed_id = run_id
        if n == count // 2:
            middle = run_id
        finished = created + timedelta(milliseconds=rng.randrange(200, 20_000))
        text = " ".join(rng.choice(["contract", "invoice", "refund", "ACME", "quarter", "risk"]) for _ in range(40))
        batch_runs.append({
            "id": run_id, "pipeline": rng.choice(PIPELINES), "target": None, "status": status,
            "input": {"text": text}, "output": {"label": "ok"} if status == "succeeded" else None,
            "step_names": STEPS, "current_step": None, "current_attempt": 0, "current_started_at": None,
            "failed_step": STEPS[failed_at] if failed_at is not None else None, "cancel_requested": False,
            "claims": 1, "owner": None, "lease_expires_at": None, "tokens_in": rng.randrange(2000),
            "tokens_out": rng.randrange(500), "created_at": created, "started_at": created,
            "finished_at": finished, "updated_at": finished, "cost_usd": 0.0, "input_boundary_tokens": 60,
            "runtime": "celery", "correlation_id": run_id, "trigger_event": None,
        })  # fmt: skip
        for idx, name in enumerate(STEPS):
            if failed_at is not None and idx > failed_at:
                break
            failing = idx == failed_at
            batch_steps.append({
                "run_id": run_id, "idx": idx, "name": name, "status": "failed" if failing else "succeeded",
                "attempts": 3 if failing else 1, "output": None if failing else {"facts": ["a", "b"], "n": idx},
                "error_type": "ValueError" if failing else None, "error_message": "boom" if failing else None,
                "error_traceback": TRACEBACK if failing else None, "tokens_in": 100, "tokens_out": 20,
                "started_at": created, "finished_at": finished, "duration_ms": 120.0, "cost_usd": 0.0,
                "boundary_tokens": 40, "error_raw": None, "error_details": None,
                "lease_owner": None, "lease_expires_at": None,
            })  # fmt: skip
        if len(batch_runs) >= 5000:
            flush()
    if batch_runs:
        flush()
    # What autovacuum would have done to a store that old (PostgreSQL vacuums after 1,000 inserts): statistics
    # for the planner, and the visibility map that lets a count read the index alone.
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM ANALYZE" if store.engine.dialect.name == "postgresql" else "ANALYZE")
    store.close()
    return failed_id, middle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = os.environ | {"BATON_DATABASE_URL": url, "BATON_DASHBOARD_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "baton", "serve", "--port", str(port)],
        env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/login", timeout=1)
            return proc, base
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(log.read_text()) from None
            time.sleep(0.1)


def measure(base: str, pages: dict[str, str], requests: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        for name, path in pages.items():
            for _ in range(10):  # warm-up: connections, the first import of the pattern code, caches
                client.get(path).raise_for_status()
            took = []
            for _ in range(requests):
                t0 = time.perf_counter()
                answer = client.get(path)
                took.append((time.perf_counter() - t0) * 1000)
                answer.raise_for_status()
            timings[name] = took
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres", default=os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="baton-bench-dashboard-"))
    databases = PgDatabases(args.postgres)
    backends = []
    if args.backend in ("sqlite", "both"):
        backends.append(("SQLite", f"sqlite:///{folder / 'runs.db'}"))
    if args.backend in ("postgres", "both"):
        backends.append(("PostgreSQL", databases.new()))
    week_ago = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
    rows = []
    try:
        for label, url in backends:
            t0 = time.perf_counter()
            failed_id, middle = fill(url, args.runs)
            filled = time.perf_counter() - t0
            print(f"{label}: {args.runs} runs written in {filled:.1f} s", file=sys.stderr)
            pages = {
                "runs page, newest": "/ui/runs",
                "runs page, failed": "/ui/runs?status=failed",
                "runs page, failed at one step": "/ui/runs?status=failed&failed_step=classify",
                "runs page, one pipeline": "/ui/runs?pipeline=research",
                "runs page, last 7 days": f"/ui/runs?since={week_ago}",
                "runs page, deep page (keyset)": f"/ui/runs?before={middle}",
                "run page, a failed run": f"/ui/runs/{failed_id}",
                "API: GET /runs?status=failed": "/runs?status=failed",
            }
            proc, base = serve(url, folder / f"serve-{label}.log")
            try:
                for name, took in measure(base, pages, args.requests).items():
                    rows.append((label, name, statistics.median(took), percentile(took, 0.95), max(took)))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        databases.drop_all()
    print(f"\n{args.runs} runs in the store; {args.requests} requests per page over HTTP on loopback\n")
    print(f"| {'store':<10} | {'page':<32} | {'p50 ms':>7} | {'p95 ms':>7} | {'max ms':>7} |")
    print(f"|{'-' * 12}|{'-' * 34}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for label, name, p50, p95, top in rows:
        print(f"| {label:<10} | {name:<32} | {p50:7.1f} | {p95:7.1f} | {top:7.1f} |")
    json.dump(rows, open(folder / "results.json", "w"))  # noqa: SIM115


if __name__ == "__main__":
    main()
