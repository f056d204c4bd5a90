"""`baton run` of a pattern whose events start other runs follows that chain to its end, prints it as `baton
trace` draws it, and exits 1 when any run of it failed; `--no-follow` judges the started run alone. On the
local runtime (the chain runs in the `baton run` process) and on real `baton worker` processes with --wait."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.commands import baton, control, counts, wait_until_finished
from tests.integration.test_research_example import RESEARCH, inbox, sources  # noqa: F401 - fixtures

APPS = Path(__file__).parent / "apps"
ORDERS = f"{APPS / 'orders.py'}:orders"
ORDER = json.dumps({"item": "lamp"})


@pytest.fixture(params=["local", "celery"])
def runtime(request, env, workers) -> str:
    if request.param == "celery":
        workers.start()
    return request.param


def _run(env, runtime: str, *args: str, target: str = ORDERS, order: str = ORDER):
    where = ("--runtime", "celery", "--wait") if runtime == "celery" else ()
    return baton(env, "run", target, "--input", order, *where, *args)


def _runs(env) -> dict[str, dict]:
    return {r["pipeline"]: r for r in json.loads(baton(env, "runs", "--json", check=0).stdout)}


def test_a_run_whose_chain_failed_exits_1_and_names_the_failed_run(runtime, env):
    (control(env) / "ship.fail").write_text("the carrier refused the parcel")
    done = _run(env, runtime)
    assert done.returncode == 1, done.stdout + done.stderr
    runs = _runs(env)
    assert runs["orders"]["status"] == "succeeded" and runs["ship"]["status"] == "failed"
    ship = runs["ship"]["id"]
    # The tree, as `baton trace` draws it: the started run, its event, the run the event started.
    tree = done.stdout[done.stdout.index(f"chain {runs['orders']['id']}") :]
    assert tree.index("orders") < tree.index("order.placed") < tree.index(ship) < tree.index("failed")
    assert f"run {ship} (ship) failed at step ship: ValueError: the carrier refused the parcel" in done.stderr
    assert f"resume with: baton resume {ship}" in done.stderr


def test_with_no_follow_only_the_started_run_counts(runtime, env):
    (control(env) / "ship.fail").touch()
    done = _run(env, runtime, "--no-follow")
    assert done.returncode == 0, done.stdout + done.stderr
    runs = _runs(env)
    assert f"chain {runs['orders']['id']}" not in done.stdout + done.stderr  # no tree, no word on the chain
    ship = runs["ship"]["id"]
    assert wait_until_finished(env, ship)["status"] == "failed"  # it failed all the same


def test_a_chain_that_succeeded_exits_0_and_prints_its_tree(runtime, env):
    done = _run(env, runtime)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = _runs(env)
    assert runs["ship"]["status"] == "succeeded"
    assert f"chain {runs['orders']['id']}" in done.stdout and runs["ship"]["id"] in done.stdout
    assert "2 runs ended, none failed" in done.stderr
    assert counts(env) == {"place": 1, "ship": 1}


def test_json_keeps_the_started_run_and_adds_its_chain(runtime, env):
    (control(env) / "ship.fail").touch()
    done = _run(env, runtime, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["pipeline"] == "orders" and shown["status"] == "succeeded" and shown["steps"][0]["name"] == "place"
    assert [(r["pipeline"], r["status"]) for r in shown["chain"]] == [("orders", "succeeded"), ("ship", "failed")]
    assert shown["chain"][0]["id"] == shown["id"]


def test_a_chain_waiting_for_approval_says_how_to_approve_and_is_no_failure(runtime, env):
    done = _run(env, runtime, order=json.dumps({"item": "lamp", "approval": True}))
    assert done.returncode == 0, done.stdout + done.stderr
    waiting = _runs(env)["ship-approved"]
    assert waiting["status"] == "awaiting_approval"
    assert f"awaiting approval: baton approve {waiting['id']} (or baton reject {waiting['id']})" in done.stderr
    assert "1 awaiting approval" in done.stderr


def test_a_pattern_that_emits_nothing_prints_no_chain(runtime, env):
    done = _run(env, runtime, "--json", target=f"{APPS / 'orders.py'}:plain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain" not in json.loads(done.stdout)
    shown = _run(env, runtime, target=f"{APPS / 'orders.py'}:plain")
    assert shown.returncode == 0 and "chain" not in shown.stdout + shown.stderr


def test_following_a_chain_on_celery_ends_when_it_takes_too_long(env, workers):
    workers.start()
    (control(env) / "ship.block").touch()  # the subscriber's step holds on until the file goes
    try:
        done = _run(env, "celery", "--follow-timeout", "2")
    finally:
        (control(env) / "ship.block").unlink()
    assert done.returncode == 1, done.stdout + done.stderr
    runs = _runs(env)
    ship = runs["ship"]["id"]
    assert any(f"is still going after 2 s (run {ship} (ship) {s})" in done.stderr for s in ("pending", "running"))
    assert f"follow it with: baton trace {runs['orders']['id']}" in done.stderr


def test_the_research_examples_report_that_failed_fails_baton_run(env, sources, inbox):  # noqa: F811
    # What the user met: research succeeded, the report it triggered failed, and the run said 0.
    env |= {"BATON_MODEL": "research:script", "BATON_SMTP_URL": inbox.url}
    (control(env) / "draft.invent").write_text("9")  # every draft makes a claim no source states
    ask = {"topic": "ACME in Q3", "sources": str(sources), "email_to": "board@example.com", "max_revisions": 1}
    done = baton(env, "run", RESEARCH, "--input", json.dumps(ask))
    assert done.returncode == 1, done.stdout + done.stderr
    runs = _runs(env)
    report = runs["research-report"]["id"]
    assert runs["research"]["status"] == "succeeded" and runs["research-report"]["status"] == "failed"
    assert "research.gathered" in done.stdout and report in done.stdout
    assert f"run {report} (research-report) failed at step write: UnsupportedClaims: after 1 revision(s)" in (
        done.stderr
    )
    assert inbox.messages == []
