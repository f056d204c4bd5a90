"""The shipped customer-triage example, on the embedded model, through the HTTP API of `baton serve`."""

import time

import pytest

import baton
from baton.web.access import Access
from baton.web.app import create_app
from tests.parallel import MODEL

# The embedded model, in this process: on the worker of the model tests.
pytestmark = MODEL


@pytest.fixture
def api(any_store):
    from fastapi.testclient import TestClient

    import baton.examples.triage  # noqa: F401 - subscribes intake, triage and response

    app = create_app(any_store, sweep=False, access=Access.from_setting("triage-token"))
    with TestClient(app, headers={"Authorization": "Bearer triage-token"}) as client:
        yield client, any_store


def test_a_customer_request_is_answered_at_once_and_ends_as_a_drafted_reply(api):
    client, store = api
    started = time.monotonic()
    answer = client.post("/events/customer.request", json={"customer": "Ada", "text": "I was charged twice in March."})
    answered_in = time.monotonic() - started
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["id"]
    assert answered_in < 1.0  # before any model ran: those take seconds here
    baton.wait_chain(event_id, store=store, timeout=300)
    chain = client.get(f"/events/{event_id}").json()
    [intake] = chain["deliveries"]
    assert intake["subscriber"] == "intake" and intake["status"] == "succeeded"
    runs = {r.pipeline: store.runs.get(r.id) for r in store.runs.list(correlation_id=event_id)}
    assert set(runs) == {"intake", "triage", "response"}
    assert all(r.status is baton.RunStatus.SUCCEEDED for r in runs.values())
    reply = runs["response"].output
    assert reply["customer"] == "Ada" and reply["category"] in ("billing", "technical", "account", "shipping", "other")
    assert reply["body"].strip()
    # The agents' calls are recorded on the steps that asked them.
    assert all(r.steps[0].calls and r.tokens.output > 0 for r in runs.values())


def test_the_api_refuses_a_request_that_breaks_the_contract(api):
    client, store = api
    answer = client.post("/events/customer.request", json={"customer": "", "text": "hello"})
    assert answer.status_code == 422 and "customer" in answer.text
    assert client.get("/events/0123456789abcdef").status_code == 404
    assert store.events.list() == []


def test_the_body_is_json_whatever_its_content_type_says_as_curl_d_sends_it(api):
    client, store = api
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = '{"customer": "Bo", "text": "Where is my parcel?"}'
    answer = client.post("/events/customer.request", content=body, headers=form)
    assert answer.status_code == 202, answer.text
    baton.wait_chain(answer.json()["id"], store=store, timeout=300)
    assert client.post("/events/customer.request", content="{not json", headers=form).status_code == 400
    assert client.post("/events/customer.request", json=["a", "list"]).status_code == 422
