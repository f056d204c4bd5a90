"""Event-driven chains as a user runs them: `baton serve` takes a request over HTTP and answers at once;
the chain intake -> triage -> respond runs on the local runtime (in the server) or on real `baton worker`
processes (celery, on Redis and on RabbitMQ), with PostgreSQL; workers are killed mid-chain and a subscriber
always fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.commands import baton, control, counts
from tests.integration.serving import Served
from tests.integration.workers import Workers, use_broker, wait_for_file

APPS = Path(__file__).parent / "apps"
TICKETS = str(APPS / "tickets.py")
REQUEST = {"customer": "Ada", "text": "I was charged twice"}
SERVE_TOKEN = "events-test-token"
AUTH = {"Authorization": f"Bearer {SERVE_TOKEN}"}


class Server(Served):
    """`baton serve` importing the ticket chain, with a token, delivering on `runtime`."""

    def __init__(self, env: dict[str, str], runtime: str, log: Path) -> None:
        env = env | {"BATON_DASHBOARD_TOKEN": SERVE_TOKEN}
        super().__init__(env, log, "--import", TICKETS, "--runtime", runtime)

    def post(self, event_type: str, payload: dict) -> httpx.Response:
        return httpx.post(f"{self.url}/events/{event_type}", json=payload, headers=AUTH, timeout=10)

    def event(self, event_id: str) -> dict:
        return httpx.get(f"{self.url}/events/{event_id}", headers=AUTH, timeout=10).json()


@pytest.fixture(params=["local", "celery", "celery-rabbitmq"])
def chain(request, env, workers, tmp_path) -> Iterator[tuple[str, Server, Workers]]:
    runtime = request.param.split("-")[0]
    if request.param == "celery-rabbitmq":
        use_broker(env, request.getfixturevalue("rabbitmq"))
    if runtime == "celery":
        workers.start()
    server = Server(env, runtime, tmp_path / "serve.log")
    yield runtime, server, workers
    server.kill()


def wait_chain_done(env, correlation: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = json.loads(baton(env, "events", "--correlation", correlation, "--json", check=0).stdout)
        statuses = [d["status"] for e in found for d in e["deliveries"]]
        if len(found) == 3 and statuses and all(s not in ("pending", "running", "starting") for s in statuses):
            return found
        assert time.monotonic() < deadline, json.dumps(found, indent=1)
        time.sleep(0.1)


def test_a_request_is_answered_at_once_and_goes_through_the_whole_chain(chain, env):
    runtime, server, _ = chain
    (control(env) / "intake.block").touch()  # nothing may run before the answer
    started = time.monotonic()
    answer = server.post("customer.request", REQUEST)
    assert answer.status_code == 202, answer.text
    assert time.monotonic() - started < 5
    event_id = answer.json()["id"]
    (control(env) / "intake.block").unlink()
    found = wait_chain_done(env, event_id)
    assert [e["type"] for e in found] == ["ticket.triaged", "ticket.received", "customer.request"]
    assert all(d["status"] == "succeeded" for e in found for d in e["deliveries"])
    assert counts(env) == {"intake": 1, "triage": 1, "respond": 1}
    where = server.event(event_id)
    intake_run = where["deliveries"][0]["run_id"]
    shown = json.loads(baton(env, "show", intake_run, "--json", check=0).stdout)
    assert shown["trigger_event"] == event_id and shown["correlation_id"] == event_id
    assert [e["type"] for e in shown["emitted_events"]] == ["ticket.received"]
    assert shown["runtime"] == runtime
    tree = baton(env, "trace", event_id, check=0).stdout
    for needle in ("customer.request", "intake", "ticket.received", "triage", "ticket.triaged", "respond"):
        assert needle in tree
    assert tree.index("intake") < tree.index("ticket.received") < tree.index("triage") < tree.index("respond")


def test_a_bad_request_is_refused_naming_the_field_and_starts_nothing(chain, env):
    _, server, _ = chain
    answer = server.post("customer.request", {"customer": "Ada", "text": "x" * 600})
    assert answer.status_code == 422
    assert "text" in answer.text
    assert server.post("customer.nothing", REQUEST).status_code == 404
    assert json.loads(baton(env, "events", "--json", check=0).stdout) == []


def test_a_subscriber_that_always_fails_is_dead_lettered_and_replayed(chain, env):
    runtime, server, _ = chain
    (control(env) / "respond.transient").write_text("1000")  # the mail server stays down
    event_id = server.post("customer.request", REQUEST).json()["id"]
    found = wait_chain_done(env, event_id)
    dead = json.loads(baton(env, "events", "--dead", "--json", check=0).stdout)
    assert [e["type"] for e in dead] == ["ticket.triaged"]
    assert dead[0]["deliveries"][0]["status"] == "failed"
    assert counts(env)["respond"] == 2  # its retries, then the dead letter
    assert found[0]["id"] == dead[0]["id"]
    (control(env) / "respond.transient").unlink()
    replay = baton(env, "events", "replay", dead[0]["id"], "--import", TICKETS, "--runtime", runtime, check=0)
    new_run = replay.stdout.strip()
    deadline = time.monotonic() + 30
    while json.loads(baton(env, "show", new_run, "--json", check=0).stdout)["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert json.loads(baton(env, "events", "--dead", "--json", check=0).stdout) == []
    assert counts(env) == {"intake": 1, "triage": 1, "respond": 3}


def test_a_process_killed_mid_chain_loses_nothing_and_runs_no_finished_step_again(chain, env, tmp_path):
    runtime, server, workers = chain
    (control(env) / "triage.block").touch()
    event_id = server.post("customer.request", REQUEST).json()["id"]
    pid = int(wait_for_file(control(env) / "triage.started"))
    if runtime == "celery":
        spare = workers.start()
        workers.kill(workers.group_of(pid))  # the worker running triage, mid-step
        assert spare.poll() is None
        (control(env) / "triage.block").unlink()
    else:
        server.kill()  # the server running the chain, mid-step
        (control(env) / "triage.block").unlink()
        triage_run = next(
            r for r in json.loads(baton(env, "runs", "--json", check=0).stdout) if r["pipeline"] == "triage"
        )
        assert json.loads(baton(env, "show", triage_run["id"], "--json", check=0).stdout)["status"] == "interrupted"
        # Resuming in a process that knows the subscribers: the rest of the chain runs there.
        baton(env, "resume", triage_run["id"], check=0)
    found = wait_chain_done(env, event_id)
    assert all(d["status"] == "succeeded" for e in found for d in e["deliveries"])
    assert counts(env) == {"intake": 1, "triage": 2, "respond": 1}


@pytest.mark.parametrize("runtime", ["local", "celery"])
def test_an_event_a_crash_left_in_the_outbox_is_delivered_when_the_server_starts(runtime, env, workers, tmp_path):
    from baton import RunStore
    from baton.store import utcnow

    store = RunStore(env["BATON_DATABASE_URL"])
    # What a process that died between its commit and the dispatch leaves: an event nobody handed over.
    store.events.add("0" * 32, "customer.request", json.dumps(REQUEST), "0" * 32, utcnow(), runtime=runtime)
    store.close()
    if runtime == "celery":
        workers.start()
    server = Server(env, runtime, tmp_path / "serve.log")
    try:
        found = wait_chain_done(env, "0" * 32)
    finally:
        server.kill()
    assert all(d["status"] == "succeeded" for e in found for d in e["deliveries"])
    assert counts(env) == {"intake": 1, "triage": 1, "respond": 1}
