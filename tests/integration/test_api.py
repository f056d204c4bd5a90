"""The HTTP API's runs: submit, list, get, resume, cancel; bad input is a 4xx naming the field, never a 500."""

import time

import pytest
from fastapi.testclient import TestClient

from baton import Agent, Pipeline, Retry, ScriptedModel, step
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

_budget_model = ScriptedModel([{"subject": "ok"}])
API_BUDGETED = Pipeline(
    "api-budgeted",
    [
        Agent("api_first", instructions="x", input=Req, output=Ticket, model=_budget_model, max_tokens=100),
        Agent("api_second", instructions="x", input=Ticket, output=Ticket, model=_budget_model, max_tokens=100),
    ],
)


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


def test_a_run_is_given_a_budget_shows_its_spend_and_resumes_with_a_larger_one(client):
    answer = client.post("/runs/api-budgeted", params={"budget_tokens": 160}, json={"text": "hello"})
    assert answer.status_code == 202, answer.text
    run = _until_done(client, answer.json()["id"])
    assert run["status"] == "failed" and run["steps"][1]["name"] == "api_second"
    assert run["steps"][1]["error"]["type"] == "BudgetExceeded"
    [budget] = run["budgets"]
    assert budget["scope"] == "run" and budget["tokens"] == 160 and 0 < budget["spent_tokens"] < 160
    page = client.get(f"/ui/runs/{run['id']}")
    assert f"{budget['spent_tokens']:,} of 160 tokens" in page.text
    resumed = client.post(f"/runs/{run['id']}/resume", params={"budget_tokens": 10_000})
    assert resumed.status_code == 202, resumed.text
    done = _until_done(client, run["id"])
    assert done["status"] == "succeeded" and done["budgets"][0]["tokens"] == 10_000


def test_a_budget_that_is_not_positive_is_a_422_naming_it(client):
    answer = client.post("/runs/api-budgeted", params={"budget_usd": -1}, json={"text": "hello"})
    assert answer.status_code == 422 and "Budget(usd=-1" in answer.json()["detail"]
    assert client.get("/runs", params={"pipeline": "api-budgeted"}).json()["runs"] == []
