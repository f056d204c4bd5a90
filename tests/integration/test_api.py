"""The HTTP API's runs: submit, list, get, resume, cancel; bad input is a 4xx naming the field, never a 500."""

import time

import pytest
from fastapi.testclient import TestClient

from baton import Pipeline, Retry, step
from baton.web.access import Access
from baton.web.app import create_app
from tests.unit.test_events import Request as Req
from tests.unit.test_events import Ticket

TOKEN = "api-test-token"
broken = {"on": True}


@step(retry=Retry(max_attempts=1))
def api_ticket(request: Req) -> Ticket:
    if broken["on"]:
        raise ValueError("the ticket system is down")
    return Ticket(subject=request.text[:50])


API_PIPELINE = Pipeline("api-tickets", [api_ticket])


@pytest.fixture
def client(any_store):
    broken["on"] = False
    access = Access.from_setting(TOKEN)
    with TestClient(
        create_app(any_store, sweep=False, access=access), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as c:
        yield c


def _until_done(client, run_id):
    deadline = time.monotonic() + 20
    while (run := client.get(f"/runs/{run_id}").json())["status"] in ("pending", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return run


def test_a_run_is_submitted_listed_and_read_back(client):
    answer = client.post("/runs/api-tickets", json={"text": "hello"})
    assert answer.status_code == 202, answer.text
    run = _until_done(client, answer.json()["id"])
    assert run["status"] == "succeeded" and run["output"] == {"subject": "hello"}
    listed = client.get("/runs", params={"pipeline": "api-tickets"}).json()
    assert [r["id"] for r in listed["runs"]] == [run["id"]] and listed["next"] is None
    assert "steps" not in listed["runs"][0]


def test_a_failed_run_is_resumed_and_a_finished_one_refused(client):
    broken["on"] = True
    run = _until_done(client, client.post("/runs/api-tickets", json={"text": "x"}).json()["id"])
    assert run["status"] == "failed" and run["steps"][0]["error"]["message"] == "the ticket system is down"
    assert client.get("/runs", params={"status": "failed"}).json()["runs"][0]["id"] == run["id"]
    broken["on"] = False
    assert client.post(f"/runs/{run['id']}/resume").status_code == 202
    assert _until_done(client, run["id"])["status"] == "succeeded"
    again = client.post(f"/runs/{run['id']}/resume")
    assert again.status_code == 409 and "already succeeded" in again.json()["detail"]
    assert client.post(f"/runs/{run['id']}/cancel").status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("post", "/runs/api-tickets", {"text": 3}, 422, "text"),
        ("post", "/runs/api-tickets", {}, 422, "text"),
        ("post", "/runs/no-such-pattern", {"text": "x"}, 404, "no-such-pattern"),
        ("get", "/runs/0123456789abcdef0123456789abcdef", None, 404, "no run"),
        ("get", "/runs?status=nonsense", None, 422, "nonsense"),
        ("post", "/runs/0123456789abcdef0123456789abcdef/cancel", None, 404, "no run"),
    ],
)
def test_bad_input_is_a_4xx_that_says_what_is_wrong(client, method, path, body, status, needle):
    answer = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert answer.status_code == status, answer.text
    assert needle in answer.text
