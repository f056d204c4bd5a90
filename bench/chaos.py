"""Self-healing under faults: runs of a pipeline with a side effect while workers are SIGKILLed and the broker
and the database restart, counting what was lost, stuck, done twice, and how long runs took to move again.

    python bench/chaos.py [--runtime celery|local|both] [--runs N] [--rate R] [--pg-down S] [--seed K]
                          [--concurrency C]
    python bench/chaos.py --quick      # a smoke test: 60 runs a runtime, about 2 minutes in all

Everything is real and the benchmark's own: a PostgreSQL cluster (`initdb` in a temporary directory, on a
free port, run as the `postgres` user when started as root) and a `redis-server` without persistence (a
restart loses every message), both restarted by the benchmark and removed at the end (on Ctrl-C too); the
machine's shared PostgreSQL and Redis are never touched. N runs (--runs, 500) of the 4-step pipeline of
`chaos_app.py` (fetch -> transform -> deliver -> finish, 50-300 ms a step; `deliver` is
`@step(side_effect=True)` and acts through `baton.effect`, appending its key to a ledger file) are submitted
at a steady rate (--rate, 4 runs/s), on:

- celery: two `baton worker --import bench/chaos_app.py --concurrency C` (threads pool, 8 steps each at
  once), runs submitted from this process. While runs are submitted, a worker chosen at random is SIGKILLed
  with its whole process group every 4-8 s and a replacement started at once (the next kill waits until two
  workers are ready again); Redis is killed and started again, empty, at 35% of the submissions; PostgreSQL
  is stopped (`pg_ctl stop -m fast`) at 65% and started again --pg-down seconds later (15). No worker is
  killed while PostgreSQL is down. Just before each restart, 10% of the runs are submitted at once,
  more than the workers take (messages wait in the queue when Redis loses them).
- local: `baton serve --import bench/chaos_app.py --runtime local`, runs submitted over its HTTP API
  (`POST /runs/bench-chaos`), the server SIGKILLed at 15%, 40% and 90% of the submissions and started again
  at once (it resumes on start the runs whose process died), and PostgreSQL restarted as above at 60%. A
  little before the second kill and before the restart, 10% of the runs are submitted at once.

A process that ends without being killed is started again at once, as systemd's `Restart=always` would,
and reported (it is a fault the benchmark did not inject). Settings (printed with the results):
BATON_LEASE_SECONDS=10, BATON_VISIBILITY_TIMEOUT=600 (the default, so that Redis's own redelivery cannot be
what heals), BATON_REQUEUE_AFTER=15 and BATON_STORE_RETRY_SECONDS=60 (the defaults). A submission that fails
(the server is down, the store is down, the broker is down) is tried again; one whose answer was lost is
first looked up in the store by its input, so that no run is made twice. After the last submission the
faults stop and the benchmark waits for every run to end (at most the lease plus BATON_REQUEUE_AFTER plus
120 s after the last fault).

What is counted (every figure from the store, and from two files the faults cannot touch, written by the
steps: see `chaos_app.py`):

- succeeded, failed (failed, interrupted or cancelled at the end; the reasons are listed), stuck (still
  pending or running at the end with a step begun), lost (accepted but not in the store, or still pending
  with no step ever begun: its message gone for good).
- re-run after checkpoint: executions of a step that began after the step's checkpoint (the store's
  `baton_steps.finished_at`, when the kept execution's body returned). An execution that began before it is
  a legitimate one: an earlier attempt lost with its process before its checkpoint (the table's footnote
  counts those, and executions of one step that overlapped in two live processes).
- effects twice: idempotency keys the ledger file holds more than once (and, in the footnote, succeeded runs
  whose effect is missing from it, and effects left uncertain).
- recovery: for each fault, the runs it affected, and for each the time from the fault to its next progress
  recorded in the store (a step's checkpoint, its `finished_at`, or the run's end). Affected by a worker's
  SIGKILL: the runs not yet ended whose latest step execution begun before the kill was in the killed
  process group (mid-step, or between two steps on the `run` hop), or whose step the store showed leased to
  it right after the kill. Affected by a restart of Redis or PostgreSQL, or a SIGKILL of `baton serve`: every
  run created before it and not yet ended. For the PostgreSQL restart, a checkpoint stamped while the
  database was down (a step whose body returned then, written after) counts from when it was back, since
  nothing can be recorded before. A run struck by another fault before it moved again (the worker that took
  it over killed in turn, the database restarting while its lease ran out) is counted from the later fault
  only (the table's "again"). Target: within BATON_LEASE_SECONDS + 15 s, from the fault (from the
  database's return for PostgreSQL's restart).

The worker and server logs, the two files, a copy of the store's tables (store.json) and each fault's
affected runs with their times (faults.json) are left in /tmp/baton-bench-chaos-RUNTIME/ for a look.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

HERE = Path(__file__).resolve().parent
APP = HERE / "chaos_app.py"
PIPELINE = "bench-chaos"
STEPS = 4
SETTINGS = {
    "BATON_LEASE_SECONDS": "10",
    "BATON_VISIBILITY_TIMEOUT": "600",
    "BATON_REQUEUE_AFTER": "15",
    "BATON_STORE_RETRY_SECONDS": "60",
}
TOKEN = "bench-chaos-token-0123456789abcdef"
ENDED = ("succeeded", "failed", "interrupted", "cancelled")
# This share of the runs is submitted at once BURST_LEAD seconds before some faults, so that many runs are in flight
# when they strike; on celery more than the two workers take at once (--concurrency each), so that messages
# wait in the queue when Redis loses them.
BURST, BURST_LEAD = 0.1, 0.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def epoch(stamp: datetime | None) -> float | None:
    """A naive UTC timestamp of the store as seconds since the epoch (the clock `time.time()` reads)."""
    return None if stamp is None else stamp.replace(tzinfo=UTC).timestamp()


def percentile(values: list[float], q: float) -> float:
    """The value at quantile `q` (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the services and processes the faults hit ---------------------------------------------------------


class Postgres:
    """A PostgreSQL cluster of the benchmark's own, in `root`, on a free port, restarted at will."""

    def __init__(self, root: Path) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
        if not found:
            raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = found[-1].parent
        self.version = self.bin.parent.name
        self.root = root / "pg"
        self.root.mkdir()
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.root, user="postgres")
        self._as_owner(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        self.start()

    def _as_owner(self, argv: list[str]) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
        log = str(self.root / "server.log")
        self._as_owner(["pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_owner(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create(self, database: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{database}"')
        return self.url(database)


class Redis:
    """A `redis-server` of the benchmark's own, without persistence: a restart loses every message."""

    def __init__(self, root: Path) -> None:
        self.root = root / "redis"
        self.root.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.root), "--logfile", str(self.root / "server.log")]
        self.proc = subprocess.Popen(argv, start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Proc:
    """A `baton worker` or `baton serve` process, in a process group of its own."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, ready: Callable[[Proc], bool]):
        self.name, self.log, self._ready = name, log, ready
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=open(log, "ab"),  # noqa: SIM115 - the process keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.ready = False
        self.killed = False  # by the benchmark; a process that exits otherwise is replaced, and reported

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.1)

    def poll_ready(self) -> bool:
        if not self.ready and self.proc.poll() is None:
            self.ready = self._ready(self)
        return self.ready

    def group(self) -> set[int]:
        """The processes of its group (a prefork worker's children included)."""
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rpartition(")")[2].split()[2]) == self.pid:
                    pids.add(int(stat.parent.name))
        return pids | {self.pid}

    def kill(self) -> None:
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()

    def why_it_ended(self) -> str:
        """Its exit code and the last line of its log that says why (a CRITICAL or ERROR line, if any)."""
        lines = self.log.read_text(errors="replace").splitlines()
        said = [line for line in lines if "CRITICAL" in line] or [line for line in lines if "ERROR/" in line]
        said = said or lines[-1:]
        return f"exit {self.proc.returncode}: {said[-1].strip()[:200] if said else '(no log)'}"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def _worker_ready(proc: Proc) -> bool:
    return b" ready." in proc.log.read_bytes()


def _serve_ready(port: int) -> Callable[[Proc], bool]:
    def ready(_: Proc) -> bool:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/runs?limit=1", headers=_auth(), timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    return ready


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


# -- one trial ---------------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str  # worker | redis | postgres | serve
    at: float  # when it struck (time.time())
    back: float  # when the service was back (the fault's time for a kill)
    pids: set[int] = field(default_factory=set)  # the processes killed
    held: set[str] = field(default_factory=set)  # runs whose step the store showed leased to them


class Trial:
    """One runtime's trial: the services, the processes, the submissions, the faults, and what they left."""

    def __init__(self, runtime: str, args: argparse.Namespace, root: Path, out: Path) -> None:
        self.runtime, self.args, self.root, self.out = runtime, args, root, out
        self.rng = random.Random(args.seed)
        self.pg = Postgres(root)
        self.store_url = self.pg.create("baton")
        self.redis = Redis(root) if runtime == "celery" else None
        self.env = dict(os.environ, **SETTINGS, CHAOS_DIR=str(out), BATON_DATABASE_URL=self.store_url)
        self.env["BATON_DASHBOARD_TOKEN"] = TOKEN
        if self.redis is not None:
            self.env["BATON_BROKER_URL"] = os.environ["BATON_BROKER_URL"] = self.redis.url
        self.procs: list[Proc] = []
        self.started = 0
        self.exited: list[str] = []  # processes that ended without the benchmark killing them
        self.faults: list[Fault] = []
        self.ids: dict[int, str] = {}
        self.submit_errors: Counter[str] = Counter()
        self.port = free_port()
        self._stop = threading.Event()
        from baton import RunStore

        RunStore(self.store_url).close()  # its tables made once, before any process opens it

    # the processes

    def start_worker(self) -> Proc:
        self.started += 1
        argv = [sys.executable, "-m", "baton", "worker", "--import", str(APP)]
        argv += ["--concurrency", str(self.args.concurrency)]
        proc = Proc(f"worker {self.started}", argv, self.env, self.out / f"worker-{self.started}.log", _worker_ready)
        self.procs.append(proc)
        return proc

    def start_serve(self) -> Proc:
        self.started += 1
        argv = [sys.executable, "-m", "baton", "serve", "--import", str(APP), "--runtime", "local"]
        argv += ["--port", str(self.port)]
        log = self.out / f"serve-{self.started}.log"
        proc = Proc(f"serve {self.started}", argv, self.env, log, _serve_ready(self.port))
        self.procs.append(proc)
        return proc

    def live(self) -> list[Proc]:
        return [p for p in self.procs if p.proc.poll() is None]

    def supervise(self) -> None:
        """As systemd's `Restart=always` would: a process that ended without being killed is started again
        (and reported: it is a fault the benchmark did not inject)."""
        for proc in self.procs:
            if proc.proc.poll() is None or proc.killed:
                continue
            proc.killed = True  # replaced once
            self.exited.append(f"{proc.name} ({proc.why_it_ended()})")
            say(f"{proc.name} ended on its own ({proc.why_it_ended()}); starting another")
            self.start_worker() if proc.name.startswith("worker") else self.start_serve()

    def close(self) -> None:
        self._stop.set()
        for proc in self.procs:
            proc.stop()
        if self.redis is not None:
            self.redis.kill()
        with contextlib.suppress(Exception):
            self.pg.stop("immediate")

    # submissions

    def lookup(self, n: int) -> str | None:
        """The run recorded for input `n`, if any; waits while the store is down."""
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.store_url, connect_timeout=3) as con:
                    row = con.execute(
                        "SELECT id FROM baton_runs WHERE pipeline = %s AND (input->>'n')::int = %s ORDER BY id LIMIT 1",
                        (PIPELINE, n),
                    ).fetchone()
                return None if row is None else str(row[0])
            except psycopg.Error:
                time.sleep(0.5)
        return None

    def submitter(self) -> Callable[[int], str]:
        """What submits run `n`: raises `Refused` when nothing was recorded, anything else when unsure."""
        if self.runtime == "celery":
            from baton import RunStore
            from baton._loader import load_target

            pipeline = load_target(f"{APP}:PIPELINE")
            store = RunStore(self.store_url)

            def celery_submit(n: int) -> str:
                return str(pipeline.submit({"n": n}, store=store, runtime="celery"))

            return celery_submit
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=_auth(), timeout=60)

        def http_submit(n: int) -> str:
            try:
                answer = client.post(f"/runs/{PIPELINE}", json={"n": n})
            except httpx.ConnectError as exc:
                raise Refused("the server is down") from exc
            if answer.status_code == 503:
                raise Refused("503 (the store is down)")
            answer.raise_for_status()
            return str(answer.json()["id"])

        return http_submit

    def submit_all(self, t0: float, window: float, bursts: list[float]) -> None:
        """Submit the runs at a steady pace over `window` seconds from `t0`, except that at each of `bursts`
        (seconds after `t0`) the next BURST share of them come all at once (a run that cannot be submitted is
        tried again, and later ones catch up)."""
        submit = self.submitter()
        due = [n * window / self.args.runs for n in range(self.args.runs)]
        for burst in bursts:
            first = next(n for n, t in enumerate(due) if t >= burst)
            for n in range(first, min(self.args.runs, first + round(BURST * self.args.runs))):
                due[n] = burst
        for n in range(self.args.runs):
            wait = t0 + due[n] - time.monotonic()
            if self._stop.wait(max(0.0, wait)):
                return
            while not self._stop.is_set():
                try:
                    self.ids[n] = submit(n)
                    break
                except Refused as exc:
                    self.submit_errors[f"refused: {exc}"] += 1
                except Exception as exc:
                    self.submit_errors[f"unsure: {type(exc).__name__}"] += 1
                    found = self.lookup(n)
                    if found is not None:
                        self.ids[n] = found
                        break
                time.sleep(0.5)

    # faults

    def kill(self, proc: Proc) -> Fault:
        pids = proc.group()
        at = time.time()
        proc.kill()
        fault = Fault("worker" if proc.name.startswith("worker") else "serve", at, at, pids)
        if fault.kind == "worker":
            fault.held = self.leased_to(pids)
        self.faults.append(fault)
        return fault

    def leased_to(self, pids: set[int]) -> set[str]:
        """Runs with a step leased to one of `pids` (best effort: nothing when the store does not answer)."""
        patterns = [f"%:{pid}:%" for pid in pids]
        try:
            with psycopg.connect(self.store_url, connect_timeout=2) as con:
                rows = con.execute(
                    "SELECT DISTINCT run_id FROM baton_steps WHERE status = 'running' AND lease_owner LIKE ANY(%s)",
                    (patterns,),
                ).fetchall()
        except psycopg.Error:
            return set()
        return {r[0] for r in rows}

    def restart_redis(self) -> None:
        assert self.redis is not None
        at = time.time()
        self.redis.kill()
        self.redis.start()
        self.faults.append(Fault("redis", at, time.time()))

    def restart_postgres(self) -> None:
        at = time.time()
        self.pg.stop()
        time.sleep(self.args.pg_down)
        self.pg.start()
        self.faults.append(Fault("postgres", at, time.time()))

    def run(self) -> None:
        """Start the processes, submit while the faults strike, then wait for every run to end."""
        window = self.args.runs / self.args.rate
        if self.runtime == "celery":
            first = [self.start_worker(), self.start_worker()]
            plan = {"redis": 0.35, "postgres": 0.65}
            bursts = [plan["redis"] * window - BURST_LEAD, plan["postgres"] * window - BURST_LEAD]
        else:
            first = [self.start_serve()]
            plan = {"postgres": 0.6, "serve": (0.15, 0.4, 0.9)}
            bursts = [plan["serve"][1] * window - BURST_LEAD, plan["postgres"] * window - BURST_LEAD]
        for proc in first:
            proc.wait_ready()
        say(f"{self.runtime}: {self.args.runs} runs over {window:.0f} s, faults striking")
        t0 = time.monotonic()
        submitting = threading.Thread(target=self.submit_all, args=(t0, window, bursts), daemon=True)
        submitting.start()
        if self.runtime == "celery":
            self.celery_faults(t0, window, plan)
        else:
            self.local_faults(t0, window, plan)
        submitting.join()
        say(f"{self.runtime}: every run submitted; waiting for them to end")
        self.wait_for_the_end()

    def at(self, t0: float, when: float) -> None:
        """Wait until `when` seconds after `t0`, supervising the processes meanwhile."""
        while not self._stop.wait(min(0.2, max(0.0, t0 + when - time.monotonic()))):
            self.supervise()
            if time.monotonic() >= t0 + when:
                return

    def celery_faults(self, t0: float, window: float, plan: dict[str, Any]) -> None:
        pending = sorted((share * window, kind) for kind, share in plan.items())
        next_kill = self.rng.uniform(*self.args.kill_every)
        while time.monotonic() - t0 < window and not self._stop.is_set():
            now = time.monotonic() - t0
            if pending and pending[0][0] <= now:
                kind = pending.pop(0)[1]
                say(f"restarting {kind}")
                self.restart_redis() if kind == "redis" else self.restart_postgres()
                next_kill = max(next_kill, time.monotonic() - t0 + self.rng.uniform(*self.args.kill_every) / 2)
                continue
            self.supervise()
            ready = [p for p in self.live() if p.poll_ready()]
            if now >= next_kill and len(ready) >= 2:
                victim = self.rng.choice(ready)
                fault = self.kill(victim)
                say(f"SIGKILLed {victim.name} (pid {victim.pid}; {len(fault.held)} steps leased to it)")
                self.start_worker()
                next_kill = now + self.rng.uniform(*self.args.kill_every)
                continue
            time.sleep(0.05)

    def local_faults(self, t0: float, window: float, plan: dict[str, Any]) -> None:
        events = sorted([(plan["postgres"] * window, "postgres")] + [(s * window, "serve") for s in plan["serve"]])
        for when, kind in events:
            self.at(t0, when)
            if self._stop.is_set():
                return
            if kind == "postgres":
                say("restarting postgres")
                self.restart_postgres()
                continue
            (server,) = self.live()
            self.kill(server)
            again = self.start_serve()
            again.wait_ready()
            self.faults[-1].back = time.time()
            say(f"SIGKILLed {server.name}; {again.name} answers")

    def wait_for_the_end(self) -> None:
        last = max((f.back for f in self.faults), default=time.time())
        lease, requeue = float(SETTINGS["BATON_LEASE_SECONDS"]), float(SETTINGS["BATON_REQUEUE_AFTER"])
        deadline = max(last + lease + requeue + 120, time.time() + 30)
        shown = 0.0
        while time.time() < deadline:
            self.supervise()
            try:
                with psycopg.connect(self.store_url, connect_timeout=3) as con:
                    counts = dict(con.execute("SELECT status, count(*) FROM baton_runs GROUP BY status").fetchall())
            except psycopg.Error:
                counts = {}
            going = counts.get("pending", 0) + counts.get("running", 0)
            if counts and not going:
                return
            if time.time() - shown > 15:
                say(f"{self.runtime}: {counts}")
                shown = time.time()
            time.sleep(1)
        say(f"{self.runtime}: runs still going at the deadline")


class Refused(Exception):
    """A submission refused with nothing recorded: it is simply tried again."""


# -- what the trial left ----------------------------------------------------------------------------------


@dataclass
class RunRow:
    id: str
    n: int
    status: str
    created: float
    finished: float | None
    failed_step: str | None


@dataclass
class StepRow:
    status: str
    attempts: int
    token: str | None
    started: float | None
    finished: float | None
    error_type: str | None


def read_store(url: str, out: Path) -> tuple[dict[str, RunRow], dict[tuple[str, int], StepRow]]:
    """The runs and steps the store has (also copied to `out`/store.json, with the lost attempts, for a look)."""
    with psycopg.connect(url) as con:
        copy: dict[str, list[dict[str, Any]]] = {}
        for table in ("runs", "steps", "attempts", "effects"):
            cur = con.execute(f"SELECT * FROM baton_{table}")
            names = [c.name for c in cur.description or ()]
            copy[table] = [dict(zip(names, row, strict=True)) for row in cur]
        (out / "store.json").write_text(json.dumps(copy, default=str, indent=1))
        runs = {
            r[0]: RunRow(r[0], int(r[1]), r[2], epoch(r[3]) or 0.0, epoch(r[4]), r[5])
            for r in con.execute(
                "SELECT id, (input->>'n')::int, status, created_at, finished_at, failed_step FROM baton_runs"
            )
        }
        steps = {}
        query = "SELECT run_id, idx, status, attempts, output, started_at, finished_at, error_type FROM baton_steps"
        for run_id, idx, status, attempts, output, started, finished, error in con.execute(query):
            trail = (output or {}).get("trail") or []
            token = trail[-1] if status == "succeeded" and len(trail) == idx + 1 else None
            steps[(run_id, idx)] = StepRow(status, attempts, token, epoch(started), epoch(finished), error)
    return runs, steps


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Figures:
    runs: int
    statuses: Counter[str]
    succeeded: int
    failed: int
    stuck: int
    lost: int
    duplicates: int
    rerun_after: list[str]
    rerun_before: int
    overlapped: list[str]
    executions: int
    effects_twice: list[str]
    effects_missing: int
    uncertain: int
    failures: Counter[str]
    recovery: dict[str, dict[str, Any]]
    requeued: Counter[str]


def analyse(trial: Trial) -> Figures:
    """Count what the trial left in the store and in the steps' files."""
    runs, steps = read_store(trial.store_url, trial.out)
    executions = read_lines(trial.out / "executions.log")
    ledger = Counter(e["key"] for e in read_lines(trial.out / "effects.log"))
    by_n = Counter(r.n for r in runs.values())
    accepted = set(trial.ids.values())
    statuses = Counter(r.status for r in runs.values())

    begun = {run for (run, _idx) in steps} | {e["run"] for e in executions}
    going = [r for r in runs.values() if r.status in ("pending", "running")]
    stuck = sum(1 for r in going if r.id in begun)
    lost = sum(1 for r in going if r.id not in begun) + len(accepted - set(runs))
    lost += trial.args.runs - len(trial.ids)  # never submitted (the trial was cut short)
    failed = [r for r in runs.values() if r.status in ("failed", "interrupted", "cancelled")]
    failures = Counter(
        f"{r.status} at {r.failed_step}: {steps[(r.id, i)].error_type}"
        for r in failed
        for i in range(STEPS)
        if (r.id, i) in steps and steps[(r.id, i)].status not in ("succeeded", "skipped")
    )

    # Executions of each step, beside its checkpoint.
    starts: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    ends: dict[str, float] = {}
    for e in executions:
        if e["ev"] == "start":
            starts[(e["run"], e["idx"])].append(e)
        else:
            ends[e["token"]] = e["t"]
    died: dict[int, float] = {}
    for f in trial.faults:
        for pid in f.pids:
            died[pid] = f.at
    rerun_after, overlapped, rerun_before = [], [], 0
    for key, seen in starts.items():
        row = steps.get(key)
        if row is None or row.status != "succeeded" or row.finished is None:
            continue
        for e in seen:
            if e["t"] > row.finished:
                rerun_after.append(f"{key[0]} step {key[1]} attempt {e['attempt']} (pid {e['pid']})")
            elif e["token"] != row.token:
                rerun_before += 1
        spans = sorted((e["t"], ends.get(e["token"], died.get(e["pid"], float("inf"))), e["pid"]) for e in seen)
        for (_s1, e1, p1), (s2, _e2, p2) in itertools.pairwise(spans):
            if s2 < e1 and p1 != p2:
                overlapped.append(f"{key[0]} step {key[1]} (pids {p1} and {p2})")
    twice = [k for k, c in ledger.items() if c > 1]
    done = [r for r in runs.values() if r.status == "succeeded"]
    missing = sum(1 for r in done if f"{r.id}/deliver/ledger" not in ledger)
    uncertain = sum(1 for s in steps.values() if s.error_type == "EffectUncertain")
    requeued: Counter[str] = Counter()
    for log in trial.out.glob("*.log"):
        text = log.read_text(errors="replace")
        requeued["lease"] += text.count("a step's lease ran out; queued again")
        requeued["message"] += text.count("its message was lost; queued again")
        requeued["resumed"] += text.count("its process died mid-run; resumed here")
    return Figures(
        runs=trial.args.runs,
        statuses=statuses,
        succeeded=statuses["succeeded"],
        failed=len(failed),
        stuck=stuck,
        lost=lost,
        duplicates=sum(c - 1 for c in by_n.values() if c > 1),
        rerun_after=rerun_after,
        rerun_before=rerun_before,
        overlapped=overlapped,
        executions=sum(len(s) for s in starts.values()),
        effects_twice=twice,
        effects_missing=missing,
        uncertain=uncertain,
        failures=failures,
        recovery=recovery(trial, runs, steps, starts),
        requeued=requeued,
    )


def recovery(
    trial: Trial,
    runs: dict[str, RunRow],
    steps: dict[tuple[str, int], StepRow],
    starts: dict[tuple[str, int], list[dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """For each kind of fault: how many struck, the runs they affected, and the seconds until each moved."""
    progress: dict[str, list[float]] = defaultdict(list)
    for (run_id, _idx), row in steps.items():
        if row.status == "succeeded" and row.finished is not None:
            progress[run_id].append(row.finished)
    for r in runs.values():
        if r.status in ENDED and r.finished is not None:
            progress[r.id].append(r.finished)
    latest: dict[str, list[tuple[float, int]]] = defaultdict(list)  # run -> (start, pid) of its executions
    for (run_id, _idx), seen in starts.items():
        latest[run_id].extend((e["t"], e["pid"]) for e in seen)

    hits: list[tuple[Fault, set[str]]] = []
    for fault in sorted(trial.faults, key=lambda f: f.at):
        going = {r.id for r in runs.values() if r.created <= fault.at and (r.finished is None or r.finished > fault.at)}
        if fault.kind == "worker":
            mine = set(fault.held)
            for run_id in going:
                before = [x for x in latest[run_id] if x[0] <= fault.at]
                if before and max(before)[1] in fault.pids:
                    mine.add(run_id)
            hits.append((fault, going & mine))
        else:
            hits.append((fault, going))

    out: dict[str, dict[str, Any]] = {}
    detail: list[dict[str, Any]] = []  # for a look afterwards: faults.json
    for i, (fault, affected) in enumerate(hits):
        entry = out.setdefault(fault.kind, {"faults": 0, "affected": 0, "seconds": [], "never": 0, "again": 0})
        entry["faults"] += 1
        entry["affected"] += len(affected)
        entry.setdefault("down", []).append(fault.back - fault.at)
        moved_after: dict[str, float | str | None] = {}
        for run_id in sorted(affected):
            later = [t for t in progress[run_id] if t > fault.at]
            moved = min(later) if later else None
            # Struck again before it moved (the worker that took it over killed too, the database restarting
            # while its lease ran out): its wait is counted from the later fault only.
            again = next((f for f, hit in hits[i + 1 :] if run_id in hit and (moved is None or f.at < moved)), None)
            if again is not None:
                entry["again"] += 1
                moved_after[run_id] = f"struck again by {again.kind} {again.at - fault.at:.1f} s later"
            elif moved is None:
                entry["never"] += 1
                moved_after[run_id] = None
            else:
                if fault.kind == "postgres":
                    moved = max(moved, fault.back)
                entry["seconds"].append(moved - fault.at)
                moved_after[run_id] = round(moved - fault.at, 3)
        detail.append({"kind": fault.kind, "at": fault.at, "back": fault.back, "pids": sorted(fault.pids)})
        detail[-1] |= {"held": sorted(fault.held), "moved_after": moved_after}
    (trial.out / "faults.json").write_text(json.dumps(detail, indent=1))
    return out


# -- the table ----------------------------------------------------------------------------------------------

KINDS = {
    "worker": "worker SIGKILLed (whole group)",
    "serve": "baton serve SIGKILLed",
    "redis": "Redis restarted (empty)",
    "postgres": "PostgreSQL restarted",
}


def print_results(trial: Trial, figures: Figures, wall: float) -> None:
    args = trial.args
    lease = float(SETTINGS["BATON_LEASE_SECONDS"])
    target = lease + 15
    if trial.runtime == "celery":
        where = (
            f"celery: 2 x `baton worker --concurrency {args.concurrency}` (threads pool), runs submitted from "
            f"the benchmark's process ({BURST:.0%} of them at once just before each restart)"
        )
    else:
        where = (
            "local: `baton serve --runtime local`, runs submitted over its HTTP API "
            f"({BURST:.0%} of them at once just before the second kill, and before PostgreSQL restarts)"
        )
    print(
        f"\n{args.runs} runs of a {STEPS}-step pipeline (50-300 ms a step; step 3 a side effect), {args.rate:g} "
        f"runs/s, on {where};\nprivate PostgreSQL {trial.pg.version}"
        + (" and Redis (no persistence)" if trial.redis else "")
        + f"; settings: {' '.join(f'{k}={v}' for k, v in SETTINGS.items())}; pg down {args.pg_down:g} s; "
        f"seed {args.seed}."
    )
    header = (
        f"{'runtime':<8} {'runs':>5} {'succeeded':>9} {'failed':>6} {'stuck':>5} {'lost':>4} "
        f"{'re-run after ckpt':>17} {'effects twice':>13} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{trial.runtime:<8} {figures.runs:>5} {figures.succeeded:>9} {figures.failed:>6} {figures.stuck:>5} "
        f"{figures.lost:>4} {len(figures.rerun_after):>17} {len(figures.effects_twice):>13} {wall:>7.0f}"
    )
    print("\nrecovery: seconds from a fault to each affected run's next checkpoint or end (store timestamps)")
    header = (
        f"{'fault':<31} {'count':>5} {'down s':>6} {'affected':>8} {'again':>5} {'p50 s':>6} {'p95 s':>6} "
        f"{'max s':>6} {'never':>5}  target (<= {target:g} s)"
    )
    print(header)
    print("-" * len(header))
    every: list[float] = []
    misses = []
    for kind in ("worker", "serve", "redis", "postgres"):
        entry = figures.recovery.get(kind)
        if entry is None:
            continue
        seconds, down = entry["seconds"], max(entry["down"])
        every += seconds
        if seconds:
            p50, p95, top = percentile(seconds, 0.5), percentile(seconds, 0.95), max(seconds)
            cells = f"{p50:>6.1f} {p95:>6.1f} {top:>6.1f}"
        else:
            top, cells = 0.0, f"{'-':>6} {'-':>6} {'-':>6}"
        # From the fault; for the database's restart, from its return (nothing moves while it is down).
        allowed = target + (down if kind == "postgres" else 0.0)
        verdict = "ok" if top <= allowed and not entry["never"] else "MISSED"
        if kind == "postgres":
            verdict += f" ({top - down:.1f} s after it was back)" if seconds else ""
        if verdict.startswith("MISSED"):
            misses.append(kind)
        down_cell = f"{down:>6.1f}" if kind != "worker" else f"{'':>6}"
        print(
            f"{KINDS[kind]:<31} {entry['faults']:>5} {down_cell} {entry['affected']:>8} {entry['again']:>5} {cells} "
            f"{entry['never']:>5}  {verdict}"
        )
    missed = []
    if figures.succeeded != figures.runs:
        missed.append(f"{figures.runs} succeeded")
    for name, value in (
        ("stuck", figures.stuck),
        ("lost", figures.lost),
        ("re-run after checkpoint", len(figures.rerun_after)),
        ("effects twice", len(figures.effects_twice)),
    ):
        if value:
            missed.append(f"0 {name}")
    missed += [f"recovery after {KINDS[k]}" for k in misses]
    if trial.exited:
        missed.append(f"no process ending on its own ({len(trial.exited)} did, and were started again)")
    print("targets: " + ("all met" if not missed else "MISSED " + ", ".join(missed)))
    print(
        f"notes: {figures.executions} step executions for {figures.runs * STEPS} steps; "
        f"{figures.rerun_before} ran again before their checkpoint (the attempt was lost with its process), "
        f"{len(figures.overlapped)} overlapped another live one; "
        f"sweeper requeues: {figures.requeued['lease']} for a lease, {figures.requeued['message']} for a lost "
        f"message; runs resumed by serve on start: {figures.requeued['resumed']}; effects uncertain: "
        f"{figures.uncertain}, missing for a succeeded run: {figures.effects_missing}; duplicate runs: "
        f"{figures.duplicates}; submissions tried again: {sum(trial.submit_errors.values())} "
        f"{dict(trial.submit_errors) or ''}; statuses {dict(figures.statuses)}; logs in {trial.out}."
    )
    if every:
        p50, p95 = percentile(every, 0.5), percentile(every, 0.95)
        print(
            f"all faults: p50 {p50:.1f} s, p95 {p95:.1f} s, max {max(every):.1f} s. down: how long the service "
            "was gone (for serve: until the new one answered); again: affected runs struck by another fault "
            "before they moved, counted from that one only; never: affected runs that never moved again."
        )
    for what, items in (
        ("ended on their own", trial.exited),
        ("failed", [f"{k} x{v}" for k, v in figures.failures.items()]),
        ("re-run after checkpoint", figures.rerun_after),
        ("overlapped", figures.overlapped),
        ("effects twice", figures.effects_twice),
    ):
        if items:
            print(f"{what}: " + "; ".join(items[:10]) + (f" (+{len(items) - 10} more)" if len(items) > 10 else ""))


# -- the benchmark --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def interrupted_cleanly() -> Iterator[None]:
    """SIGTERM behaves as Ctrl-C does: the trial's processes and services are stopped on the way out."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def trial(runtime: str, args: argparse.Namespace) -> None:
    out = Path(tempfile.gettempdir()) / f"baton-bench-chaos-{runtime}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with tempfile.TemporaryDirectory(prefix="baton-chaos-") as tmp:
        root = Path(tmp)
        if os.geteuid() == 0:
            os.chmod(root, 0o755)  # the postgres user reaches its cluster inside
        one = Trial(runtime, args, root, out)
        try:
            t0 = time.monotonic()
            one.run()
            wall = time.monotonic() - t0
            for proc in one.procs:  # stopped first: nothing writes while it is counted
                proc.stop()
            figures = analyse(one)
        finally:
            one.close()
    print_results(one, figures, wall)
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", choices=["celery", "local", "both"], default="both")
    parser.add_argument("--runs", type=int, default=500, help="runs a runtime")
    parser.add_argument("--rate", type=float, default=4.0, help="runs submitted a second")
    parser.add_argument("--pg-down", type=float, default=15.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--seed", type=int, default=14, help="of the faults' times and victims")
    parser.add_argument("--concurrency", type=int, default=8, help="steps each celery worker executes at once")
    parser.add_argument("--quick", action="store_true", help="60 runs at 2/s, PostgreSQL down 8 s")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rate, args.pg_down = 60, 2.0, 8.0
    args.kill_every = (4.0, 8.0)
    for name, value in SETTINGS.items():
        os.environ[name] = value  # this process's baton (the celery submissions) reads them too
    runtimes = ["celery", "local"] if args.runtime == "both" else [args.runtime]
    try:
        with interrupted_cleanly():
            for runtime in runtimes:
                trial(runtime, args)
    except KeyboardInterrupt:
        say("interrupted: every process and service the benchmark started is stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
