"""Events through the customer-triage chain on Celery: how many per second, and how long a chain takes.

    python bench/events.py [--chains N] [--one-by-one M] [--postgres URL] [--broker URL]

The shipped example (intake -> ticket.received -> triage -> ticket.triaged -> response) runs on one Celery
worker (prefork, 2 processes) with Redis and a fresh PostgreSQL database; its agents answer at once from a
scripted model (`events_apps.py`), so what is measured is baton: the outbox, the deliveries, the runs and
their checkpoints, the Celery tasks. A chain starts with `baton.publish("customer.request", ...)` (what
`POST /events/customer.request` does) and ends when the `response` run has succeeded, which the worker
signals through Redis. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from overhead import PgDatabases, Worker, percentile  # noqa: E402 - beside this file

REQUEST = {"customer": "Ada", "text": "I was charged twice for my March invoice, please refund one of them."}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=300, help="chains published at once")
    parser.add_argument("--one-by-one", type=int, default=100, help="chains timed one at a time")
    parser.add_argument(
        "--postgres", default=os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--broker", default=os.environ.get("BATON_BENCH_BROKER_URL", "redis://127.0.0.1:6379/8"))
    args = parser.parse_args()

    import redis

    client = redis.Redis.from_url(args.broker)
    client.flushdb()
    databases = PgDatabases(args.postgres)
    db_url = databases.new()
    os.environ |= {"BATON_DATABASE_URL": db_url, "BATON_BROKER_URL": args.broker, "BATON_MODEL": "fast:bench"}
    from baton._loader import load_target

    done_key = load_target(f"{HERE / 'events_apps.py'}:DONE_KEY")  # registers the fast model first
    import baton
    import baton.examples.triage  # subscribes the chain here, to publish and dispatch

    store = baton.RunStore(db_url)
    argv = [
        sys.executable, "-m", "baton", "worker", "-c", "2", "--pool", "prefork",
        "--import", str(HERE / "events_apps.py"), "--import", "baton.examples.triage",
    ]  # fmt: skip
    ended: dict[str, float] = {}

    def wait(ids: set[str]) -> None:
        deadline = time.monotonic() + 120
        while not ids <= ended.keys():
            got = client.brpop(done_key, timeout=1)
            if got is not None:
                ended.setdefault(got[1].decode(), time.perf_counter())
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids - ended.keys())} chains did not end within 120 s")

    def publish() -> tuple[str, float]:
        t0 = time.perf_counter()
        return baton.publish("customer.request", REQUEST, store=store, runtime="celery"), t0

    with tempfile.TemporaryDirectory() as logs:
        worker = Worker(argv, dict(os.environ), Path(logs) / "worker.log")
        try:
            for _ in range(10):  # warm up
                event_id, _ = publish()
                wait({event_id})
            alone = []
            for _ in range(args.one_by_one):
                event_id, t0 = publish()
                wait({event_id})
                alone.append(ended[event_id] - t0)
            started = time.perf_counter()
            sent = [publish() for _ in range(args.chains)]
            publish_ms = (time.perf_counter() - started) / args.chains * 1000
            wait({event_id for event_id, _ in sent})
            elapsed = max(ended[e] for e, _ in sent) - started
            loaded = [ended[e] - t0 for e, t0 in sent]
        finally:
            worker.stop()
            store.close()
            if os.environ.get("BATON_BENCH_KEEP_DB"):
                print(f"kept the database {db_url} and the worker's log", file=sys.stderr)
                os.system(f"cp {Path(logs) / 'worker.log'} /tmp/bench_worker.log")
            else:
                databases.drop_all()
            client.flushdb()

    events = 3 * args.chains  # customer.request, ticket.received, ticket.triaged
    print(f"\ncustomer-triage chain on Celery (1 worker, prefork 2), scripted agents, {args.chains} chains at once")
    print(f"{'what':<44} {'value':>12}")
    rows = [
        ("publish (the HTTP answer's work), ms", publish_ms),
        ("events per second, all in flight", events / elapsed),
        ("chains per second, all in flight", args.chains / elapsed),
        ("chain latency alone, p50 ms", percentile(alone, 0.5) * 1000),
        ("chain latency alone, p95 ms", percentile(alone, 0.95) * 1000),
        (f"chain latency with {args.chains} in flight, p50 ms", percentile(loaded, 0.5) * 1000),
        (f"chain latency with {args.chains} in flight, p95 ms", percentile(loaded, 0.95) * 1000),
        ("mean chain latency alone, ms", statistics.mean(alone) * 1000),
    ]
    for what, value in rows:
        print(f"{what:<44} {value:>12.1f}")


if __name__ == "__main__":
    main()
