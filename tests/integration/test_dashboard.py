"""The dashboard's pages and its access rules, on SQLite and PostgreSQL, through the real app in-process.

The browser flow (Chromium) is in test_dashboard_browser.py; this file checks what each page says and does.
"""

import json
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

import baton
from baton import Agent, Pipeline, Retry, ScriptedModel, Supervisor, on, step
from baton.web.access import COOKIE, Access
from baton.web.app import create_app

TOKEN = "dashboard-test-token-0123456789"
NO_RETRY = Retry(max_attempts=1)


class Order(BaseModel):
    n: int = Field(ge=0, le=1000)
    fail_at: str = Field(default="", max_length=20)


class Loaded(BaseModel):
    n: int
    fail_at: str = ""


class Checked(BaseModel):
    ok: bool


gate = {"fail": False, "hold": threading.Event()}
gate["hold"].set()


@step(name="dash_load", retry=NO_RETRY)
def load(order: Order) -> Loaded:
    gate["hold"].wait(30)
    if order.fail_at == "load":
        raise ValueError("the source is gone")
    return Loaded(n=order.n, fail_at=order.fail_at)


@step(name="dash_check", retry=NO_RETRY)
def check(loaded: Loaded) -> Checked:
    if loaded.fail_at == "check" or gate["fail"]:
        raise ValueError(f"order {loaded.n} does not add up")
    return Checked(ok=True)


ORDERS = Pipeline("dash-orders", [load, check])
OTHER = Pipeline("dash-other", [load])


class Note(BaseModel):
    text: str = Field(max_length=200)


class Tags(BaseModel):
    tags: list[str] = Field(max_length=2)


TAGGER = Pipeline(
    "dash-tagger",
    [
        Agent(
            "dash_tag",
            instructions="Tag the note.",
            input=Note,
            output=Tags,
            model=ScriptedModel(['{"tags": ["a", "b", "c"]}']),
            reasks=0,
        )
    ],
)


class Ask(BaseModel):
    topic: str


class Route(BaseModel):
    left: Ask | None = None
    right: Ask | None = None


class Part(BaseModel):
    text: str


class Parts(BaseModel):
    left: Part | None = None
    right: Part | None = None


@step(name="dash_route")
def route(ask: Ask) -> Route:
    return Route(left=ask, right=ask)


@step(name="dash_left")
def left(ask: Ask) -> Part:
    time.sleep(0.2)
    return Part(text="L")


@step(name="dash_right")
def right(ask: Ask) -> Part:
    time.sleep(0.2)
    return Part(text="R")


@step(name="dash_merge")
def merge(parts: Parts) -> Part:
    return Part(text=(parts.left.text if parts.left else "") + (parts.right.text if parts.right else ""))


LANES = Supervisor("dash-lanes", router=route, workers={"left": left, "right": right}, merge=merge)


@step(name="dash_publish", approval=True, side_effect=True, retry=NO_RETRY)
def publish_it(checked: Checked) -> Checked:
    baton.effect("receipt", lambda key: {"published": key})
    return checked


GATED = Pipeline("dash-gated", [load, check, publish_it])


class Receipt(BaseModel):
    id: str
    amount: int


paid: list[str] = []


@step(name="dash_pay", side_effect=True, retry=NO_RETRY)
def pay_it(order: Order) -> Checked:
    def act(key: str) -> Receipt:
        paid.append(key)
        raise BrokenPipeError("the line dropped after the payment went out")  # did it go out? a person knows

    receipt = baton.effect("payment", act, returns=Receipt)
    return Checked(ok=receipt.amount == order.n)


PAYING = Pipeline("dash-paying", [pay_it])


@on("dash.pinged")
@step(name="dash_pong", retry=NO_RETRY)
def pong(note: Note) -> Checked:
    return Checked(ok=True)


@pytest.fixture
def client(any_store):
    gate["fail"] = False
    gate["hold"].set()
    app = create_app(any_store, sweep=False, access=Access.from_setting(TOKEN))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-run="([0-9a-f]{32})"', html)


def _count(html: str, status: str) -> int:
    found = re.search(rf'data-status="{status}"><span class="badge s-{status}">{status}</span> <b>(\d+)</b>', html)
    assert found, html
    return int(found.group(1))


def test_the_runs_page_lists_newest_first_with_counts_filters_and_keyset_pages(client, any_store):
    made = [ORDERS.run({"n": i}, store=any_store).id for i in range(52)]
    failed_check = [ORDERS.run({"n": i, "fail_at": "check"}, store=any_store).id for i in range(3)]
    failed_load = [ORDERS.run({"n": i, "fail_at": "load"}, store=any_store).id for i in range(2)]
    other = OTHER.run({"n": 1}, store=any_store).id
    everything = [*made, *failed_check, *failed_load, other]

    first = client.get("/ui/runs").text
    assert _rows(first) == sorted(everything, reverse=True)[:50]  # newest first
    assert re.search(r"all <b>58</b>", first)
    assert (_count(first, "succeeded"), _count(first, "failed"), _count(first, "running")) == (53, 5, 0)
    older = re.search(r'href="([^"]+)" id="older"', first).group(1).replace("&amp;", "&")
    second = client.get(older).text
    assert _rows(second) == sorted(everything, reverse=True)[50:]
    assert 'id="older"' not in second and "« newest" in second

    failed = client.get("/ui/runs", params={"status": "failed"}).text
    assert sorted(_rows(failed)) == sorted(failed_check + failed_load)
    at_check = client.get("/ui/runs", params={"status": "failed", "failed_step": "dash_check"}).text
    assert sorted(_rows(at_check)) == sorted(failed_check)
    assert _count(at_check, "failed") == 3 and _count(at_check, "succeeded") == 0  # counts follow the filters
    assert '<option value="dash_load" >dash_load</option>' in at_check  # the failed steps are the choices
    assert _rows(client.get("/ui/runs", params={"pipeline": "dash-other"}).text) == [other]

    now = datetime.now(UTC).replace(tzinfo=None)
    later = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    earlier = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert _rows(client.get("/ui/runs", params={"since": later}).text) == []
    assert len(_rows(client.get("/ui/runs", params={"since": earlier, "until": later}).text)) == 50
    assert _rows(client.get("/ui/runs", params={"until": earlier}).text) == []
    bad = client.get("/ui/runs", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since" in bad.text
    far = client.get("/runs", params={"since": "0001-01-01T00:00:00+05:00"})
    assert far.status_code == 422 and "since" in far.json()["detail"]
    assert client.get("/ui/runs", params={"until": "9999-12-31T23:59-05:00"}).status_code == 422

    api = client.get("/runs", params={"failed_step": "dash_load", "since": earlier}).json()
    assert sorted(r["id"] for r in api["runs"]) == sorted(failed_load)


def test_a_failed_agents_page_shows_the_error_the_raw_answer_and_the_validation_errors(client, any_store):
    run = TAGGER.run({"text": "the printer is on fire"}, store=any_store)
    assert run.status is baton.RunStatus.FAILED
    page = client.get(f"/ui/runs/{run.id}").text
    assert 'id="error-dash_tag"' in page
    assert "ContractViolation" in page
    assert "Tags" in page  # the contract
    assert "{&#34;tags&#34;: [&#34;a&#34;, &#34;b&#34;, &#34;c&#34;]}" in page  # the raw answer, escaped
    validation = re.search(r'<table class="validation">(.*?)</table>', page, re.S).group(1)
    assert '<td class="mono">tags</td>' in validation and "at most 2" in validation
    assert 'class="traceback"' in page and "Traceback (most recent call last)" in page
    assert 'id="resume"' in page and 'id="retry"' in page and 'id="cancel"' not in page  # finished: no cancel


def test_checkpoints_are_folded_and_a_supervisors_workers_are_parallel_lanes_on_one_axis(client, any_store):
    run = LANES.run({"topic": "x"}, store=any_store)
    assert run.status is baton.RunStatus.SUCCEEDED, run
    page = client.get(f"/ui/runs/{run.id}").text
    assert "workers, in parallel lanes" in page
    bars = dict(re.findall(r'<tr class="[^"]*" data-step="(\w+)".*?class="bar[^"]*" style="left:([\d.]+)%', page, re.S))
    assert set(bars) == {"dash_route", "left", "right", "dash_merge"}
    assert abs(float(bars["left"]) - float(bars["right"])) < 25  # side by side, not one after the other
    assert float(bars["dash_merge"]) > max(float(bars["left"]), float(bars["right"]))
    assert re.search(r'<tr class="lane" data-step="left"', page) and re.search(
        r'<tr class="" data-step="dash_merge"', page
    )
    checkpoint = re.search(r'<details id="cp-dash_merge">.*?</details>', page, re.S).group(0)
    assert "&#34;text&#34;: &#34;LR&#34;" in checkpoint and "open" not in checkpoint.split(">")[0]


def test_the_buttons_resume_retry_and_cancel_and_a_refused_action_changes_nothing(client, any_store):
    gate["fail"] = True
    run = ORDERS.run({"n": 7}, store=any_store)
    assert run.status is baton.RunStatus.FAILED
    gate["fail"] = False
    answer = client.post(f"/ui/runs/{run.id}/resume", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == f"/ui/runs/{run.id}?done=resumed"
    assert baton.wait(run.id, store=any_store, timeout=20).status is baton.RunStatus.SUCCEEDED

    refused = client.post(f"/ui/runs/{run.id}/resume")  # followed to the run page
    assert refused.status_code == 200 and "already succeeded" in refused.text
    assert any_store.runs.get(run.id).status is baton.RunStatus.SUCCEEDED

    retried = client.post(f"/ui/runs/{run.id}/retry", data={"step": "dash_check"})
    assert "Done: retried from step dash_check" in retried.text
    done = baton.wait(run.id, store=any_store, timeout=20)
    assert done.status is baton.RunStatus.SUCCEEDED and done.steps[1].attempts == 3  # 2 before, then this one
    assert done.steps[0].attempts == 1  # the step before it was not run again

    # Retried from the first step, every checkpoint goes at once, before anything runs again.
    gate["hold"].clear()
    client.post(f"/ui/runs/{run.id}/retry", data={"step": "dash_load"})
    waiting = any_store.runs.get(run.id)
    assert waiting.output is None and [s.output for s in waiting.steps] == [None, None], waiting
    assert [s.status.value for s in waiting.steps][1] == "pending"
    gate["hold"].set()
    assert baton.wait(run.id, store=any_store, timeout=20).steps[0].attempts == 2

    gate["hold"].clear()
    running = ORDERS.submit({"n": 8}, store=any_store)
    deadline = time.monotonic() + 10
    while any_store.runs.get(running).status is not baton.RunStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    page = client.get(f"/ui/runs/{running}").text
    assert 'data-finished="no"' in page and 'fetch("/ui/runs/' in page and 'id="cancel"' in page
    cancelled = client.post(f"/ui/runs/{running}/cancel")
    assert "Done: cancel requested" in cancelled.text
    gate["hold"].set()
    assert baton.wait(running, store=any_store, timeout=20).status is baton.RunStatus.CANCELLED
    live = client.get(f"/ui/runs/{running}/live").text
    assert 'data-finished="yes"' in live and 'data-status="cancelled"' in live


def test_a_run_awaiting_approval_is_approved_or_rejected_from_its_page(client, any_store):
    run = GATED.run({"n": 3}, store=any_store)
    assert run.status is baton.RunStatus.AWAITING_APPROVAL
    listed = client.get("/ui/runs", params={"status": "awaiting_approval"}).text
    assert _rows(listed) == [run.id] and _count(listed, "awaiting_approval") == 1
    page = client.get(f"/ui/runs/{run.id}").text
    assert 'id="approve"' in page and 'id="reject"' in page and "before step\n    <b>dash_publish</b>" in page
    approved = client.post(f"/ui/runs/{run.id}/approve")
    assert "Done: approved" in approved.text
    assert baton.wait(run.id, store=any_store, timeout=20).status is baton.RunStatus.SUCCEEDED
    page = client.get(f"/ui/runs/{run.id}").text
    assert f'<tr data-key="{run.id}/dash_publish/receipt" data-status="done">' in page  # its side effect

    other = GATED.run({"n": 4}, store=any_store)
    rejected = client.post(f"/ui/runs/{other.id}/reject", data={"reason": "not this week"})
    assert "Done: rejected" in rejected.text and "not this week" in rejected.text
    shown = client.get(f"/ui/runs/{other.id}").text  # the reason, where the run's status is, not in a fold
    assert '<dt>Rejected</dt><dd id="rejection">before step <a href="#step-dash_publish">dash_publish</a>' in shown
    assert "UTC: not this week</dd>" in shown
    assert any_store.runs.get(other.id).status is baton.RunStatus.CANCELLED
    assert client.post(f"/runs/{other.id}/approve").status_code == 409  # the API: nothing to approve


def test_a_retry_that_would_do_a_side_effect_again_warns_and_acts_only_when_confirmed(client, any_store):
    run = GATED.run({"n": 6}, store=any_store)
    client.post(f"/ui/runs/{run.id}/approve")
    done = baton.wait(run.id, store=any_store, timeout=20)
    assert done.status is baton.RunStatus.SUCCEEDED
    page = client.get(f"/ui/runs/{run.id}").text
    warning = re.search(r'<p class="muted" id="retry-warning">(.*?)</p>', page, re.S)
    assert warning and "receipt of step dash_publish" in warning.group(1), page
    assert 'name="confirm" value="yes"' in page

    refused = client.post(f"/ui/runs/{run.id}/retry", data={"step": "dash_check"})  # the box not ticked
    assert refused.status_code == 200 and 'id="problem"' in refused.text
    assert f"the effect &#39;receipt&#39; of step &#39;dash_publish&#39; (key {run.id}/dash_publish/receipt" in (
        refused.text
    )
    after = any_store.runs.get(run.id)
    assert after.status is baton.RunStatus.SUCCEEDED and [s.attempts for s in after.steps] == [
        s.attempts for s in done.steps
    ]
    api = client.post(f"/runs/{run.id}/retry", json={"from_step": "dash_check"})
    assert api.status_code == 409 and api.json()["type"] == "EffectsWouldRepeat", api.text
    assert "receipt" in api.json()["detail"] and '"confirm": true' in api.json()["detail"]
    assert any_store.runs.get(run.id).status is baton.RunStatus.SUCCEEDED

    retried = client.post(f"/ui/runs/{run.id}/retry", data={"step": "dash_check", "confirm": "yes"})
    assert "Done: retried from step dash_check" in retried.text
    again = baton.wait(run.id, store=any_store, timeout=20)
    assert again.status is baton.RunStatus.AWAITING_APPROVAL and again.steps[1].attempts == 2  # it asks again


def test_a_retry_with_no_side_effect_at_stake_needs_no_confirmation(client, any_store):
    # Rejected before its side effect: a retry does nothing a second time, so it is not asked about.
    other = GATED.run({"n": 10}, store=any_store)
    client.post(f"/ui/runs/{other.id}/reject")
    assert "retry-warning" not in client.get(f"/ui/runs/{other.id}").text
    retried = client.post(f"/runs/{other.id}/retry", json={"from_step": "dash_check"})
    assert retried.status_code == 202, retried.text
    assert baton.wait(other.id, store=any_store, timeout=20).status is baton.RunStatus.AWAITING_APPROVAL


def test_an_uncertain_effect_is_settled_from_the_run_page_with_what_it_returned(client, any_store):
    paid.clear()
    run = PAYING.run({"n": 5}, store=any_store)
    key = f"{run.id}/dash_pay/payment"
    assert run.status is baton.RunStatus.FAILED and any_store.effects.get(key).status == "started"
    page = client.get(f"/ui/runs/{run.id}").text
    form = re.search(
        rf'<form method="post" action="/ui/runs/{run.id}/effects/mark" class="settle">(.*?)</form>', page, re.S
    )
    assert form, page
    assert f'value="{key}"' in form.group(1) and 'name="result"' in form.group(1)
    assert "Receipt: an object with id, amount" in form.group(1)  # what to give, read from the ledger
    mark = f"/ui/runs/{run.id}/effects/mark"

    alone = client.post(mark, data={"key": key, "done": "yes"})
    assert "give it as JSON with the Result field" in alone.text
    wrong = client.post(mark, data={"key": key, "done": "yes", "result": '{"id": "ch_1"}'})
    assert "field &#39;amount&#39;: missing" in wrong.text
    garbled = client.post(mark, data={"key": key, "done": "yes", "result": "{id"})
    assert "the Result field is not JSON" in garbled.text
    assert client.post(mark, data={"key": key, "done": "maybe"}).status_code == 422
    with TestClient(client.app, base_url="http://127.0.0.1") as anonymous:  # no token: to the sign-in page
        signin = anonymous.post(mark, data={"key": key, "done": "no"}, follow_redirects=False)
        assert signin.status_code == 303 and signin.headers["location"].startswith("/login?")
    assert any_store.effects.get(key).status == "started"  # nothing was recorded

    settled = client.post(mark, data={"key": key, "done": "yes", "result": '{"id": "ch_1", "amount": 5}'})
    assert f"Done: the effect {key} happened" in settled.text
    assert f'<tr data-key="{key}" data-status="done">' in settled.text
    client.post(f"/ui/runs/{run.id}/resume")
    resumed = baton.wait(run.id, store=any_store, timeout=20)
    assert resumed.status is baton.RunStatus.SUCCEEDED and resumed.output == {"ok": True}
    assert paid == [key]  # paid once, never again


def test_the_api_settles_an_uncertain_effect_under_the_same_checks(client, any_store):
    paid.clear()
    run = PAYING.run({"n": 2}, store=any_store)
    key = f"{run.id}/dash_pay/payment"
    mark = f"/runs/{run.id}/effects/mark"
    alone = client.post(mark, json={"key": key, "done": True})
    assert alone.status_code == 422 and '"result" in the body' in alone.json()["detail"]
    wrong = client.post(mark, json={"key": key, "done": True, "result": {"id": "ch_2", "amount": "two"}})
    assert wrong.status_code == 422 and "field 'amount'" in wrong.json()["detail"]
    other = client.post(
        f"/runs/{ORDERS.run({'n': 1}, store=any_store).id}/effects/mark", json={"key": key, "done": True}
    )
    assert other.status_code == 422 and "has no side effect" in other.json()["detail"]  # not that run's
    assert any_store.effects.get(key).status == "started"
    done = client.post(mark, json={"key": key, "done": True, "result": {"id": "ch_2", "amount": 2}})
    assert done.status_code == 200 and done.json()["status"] == "done" and done.json()["result"]["amount"] == 2
    assert client.post(f"/runs/{run.id}/resume").status_code == 202
    assert baton.wait(run.id, store=any_store, timeout=20).output == {"ok": True}
    assert paid == [key]


def test_an_unknown_run_is_a_404_page_that_says_so(client):
    page = client.get("/ui/runs/0123456789abcdef0123456789abcdef")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "no run with id" in page.text
    action = client.post("/ui/runs/0123456789abcdef/resume")
    assert action.status_code == 404 and "no run with id" in action.text


def test_a_run_started_by_an_event_shows_the_event_it_received(client, any_store):
    answer = client.post("/events/dash.pinged", json={"text": "ping"})
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["id"]
    deadline = time.monotonic() + 20
    while not (runs := any_store.runs.list(pipeline="dash_pong")) or not runs[0].status.finished:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page = client.get(f"/ui/runs/{runs[0].id}").text
    assert 'id="events"' in page and "Received <b>dash.pinged</b>" in page and event_id in page


def test_with_a_token_set_every_page_and_call_needs_it_and_the_cookie_is_not_the_token(any_store):
    app = create_app(any_store, sweep=False, access=Access.from_setting(TOKEN))
    with TestClient(app) as anonymous:
        page = anonymous.get("/ui/runs", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=%2Fui%2Fruns")
        assert anonymous.get("/runs").status_code == 401
        assert anonymous.get("/openapi.json").status_code == 401
        assert anonymous.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.post("/login", data={"token": "wrong"}).status_code == 401
        signed = anonymous.post("/login", data={"token": TOKEN, "next": "/ui/runs"}, follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/runs"
        cookie = signed.cookies[COOKIE]
        assert TOKEN not in cookie and "samesite=strict" in signed.headers["set-cookie"].lower()
        assert "httponly" in signed.headers["set-cookie"].lower()
        anonymous.cookies.set(COOKIE, cookie)
        listed = anonymous.get("/ui/runs")
        assert listed.status_code == 200 and TOKEN not in listed.text
        assert anonymous.get("/runs").status_code == 200
        run = ORDERS.run({"n": 1, "fail_at": "load"}, store=any_store)
        # Another site's page cannot make a signed-in browser act here.
        forged = anonymous.post(f"/runs/{run.id}/cancel", headers={"Origin": "https://evil.example"})
        assert forged.status_code == 401 and "another site" in forged.json()["detail"]
        assert anonymous.get("/login", params={"next": "https://evil.example"}).text.count("evil.example") == 0


def test_without_a_token_reading_is_open_but_every_change_needs_the_servers_own_token(any_store):
    access = Access.from_setting(None)
    assert not access.configured and len(access.token) >= 30
    run = ORDERS.run({"n": 1, "fail_at": "load"}, store=any_store)
    app = create_app(any_store, sweep=False, access=access)
    with TestClient(app, base_url="http://127.0.0.1:8000") as anonymous:
        assert anonymous.get("/ui/runs").status_code == 200
        assert anonymous.get(f"/runs/{run.id}").status_code == 200
        for path in (f"/runs/{run.id}/resume", f"/runs/{run.id}/cancel", "/events/dash.pinged", "/runs/dash-orders"):
            refused = anonymous.post(path, json={"n": 1, "text": "x"})
            assert refused.status_code == 401, path
        form = anonymous.post(f"/ui/runs/{run.id}/resume", follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"].startswith("/login?")
        assert any_store.runs.get(run.id).status is baton.RunStatus.FAILED  # nothing happened
        signed = anonymous.post("/login", data={"token": access.token, "next": f"/ui/runs/{run.id}"})
        assert signed.status_code == 200 and signed.url.path == f"/ui/runs/{run.id}"
        assert anonymous.post(f"/runs/{run.id}/cancel").json()["status"] == "cancelled"  # let through
        # A page elsewhere whose name was pointed at 127.0.0.1 (DNS rebinding) reads nothing.
        for host in ("evil.example", "evil.example:8000", "10.0.0.5:8000"):
            rebound = anonymous.get("/runs", headers={"Host": host})
            assert rebound.status_code == 403 and "127.0.0.1" in rebound.json()["detail"], host
        assert anonymous.get("/runs", headers={"Host": "localhost:8000"}).status_code == 200
        assert anonymous.get("/runs", headers={"Host": "[::1]:8000"}).status_code == 200


def test_sign_out_is_offered_only_to_a_browser_that_signed_in(any_store):
    access = Access.from_setting(None)
    with TestClient(create_app(any_store, sweep=False, access=access), base_url="http://127.0.0.1:8000") as browser:
        assert browser.get("/ui/runs").status_code == 200
        assert "sign out" not in browser.get("/ui/runs").text  # no token asked, none given: nothing to sign out of
        browser.post("/login", data={"token": access.token})
        assert "sign out" in browser.get("/ui/runs").text
        browser.post("/logout")
        assert "sign out" not in browser.get("/ui/runs").text
    app = create_app(any_store, sweep=False, access=Access.from_setting(TOKEN))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as program:
        assert "sign out" not in program.get("/ui/runs").text  # a token sent with each call is no session


def test_a_run_page_never_imports_the_runs_code(tmp_path, any_store):
    # The code of a run can do anything when imported; reading its page must not run it.
    module = tmp_path / "noisy_app.py"
    log = tmp_path / "imported.log"
    module.write_text(
        "from pydantic import BaseModel\n"
        "from baton import Pipeline, step\n"
        f"open({str(log)!r}, 'a').write('imported\\n')\n"
        "class N(BaseModel):\n    n: int\n"
        "@step(name='noisy_step')\ndef noisy_step(x: N) -> N:\n    return x\n"
        "noisy = Pipeline('noisy', [noisy_step])\n"
    )
    env = {"BATON_DATABASE_URL": any_store.url, "PATH": "/usr/bin:/bin"}
    made = subprocess.run(
        [sys.executable, "-m", "baton", "run", f"{module}:noisy", "--input", '{"n": 1}', "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    run_id = json.loads(made.stdout)["id"]
    assert log.read_text() == "imported\n"
    app = create_app(any_store, sweep=False, access=Access.from_setting(TOKEN))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.get(f"/ui/runs/{run_id}").status_code == 200
        assert client.get(f"/ui/runs/{run_id}/live").status_code == 200
    assert log.read_text() == "imported\n"


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path):
    env = {"BATON_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}", "PATH": "/usr/bin:/bin"}
    refused = subprocess.run(
        [sys.executable, "-m", "baton", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2  # a usage error, as for every refused command
    assert "BATON_DASHBOARD_TOKEN" in refused.stderr and "0.0.0.0" in refused.stderr
