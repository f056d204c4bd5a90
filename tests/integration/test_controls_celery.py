"""Step timeouts and budgets on real `baton worker` processes (prefork, Redis, PostgreSQL), as a user drives
them with `baton run --runtime celery` and `baton resume`. Attempts are counted in files; the agents' model
is the `openai:` provider against a loopback server that counts the calls it received.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from baton import RunStore
from tests.integration.commands import baton, control, counts, show
from tests.integration.fake_servers import ScriptedHTTPServer
from tests.integration.workers import wait_for_file

APPS = Path(__file__).parent / "apps"
GUARDED = str(APPS / "guarded.py")
# As in apps/guarded.py (not imported here: it declares subscribers and patterns of its own).
TIMEOUT = 0.5
HARD_LIMIT = TIMEOUT + 30  # the executor's timeout, and Celery's grace after it
REGIONS = ("north", "south", "east", "west")
SPENT = 2000  # what the server says each call spent
BUDGET = 5000  # the survey's budget of tokens


@pytest.fixture
def started(env, workers) -> dict[str, str]:
    """One prefork worker of two processes, with the test app imported (its notes of tasks included)."""
    workers.start(concurrency=2, imports=(GUARDED,))
    return env


def run_on_celery(env, target: str, data: dict, *extra: str) -> str:
    result = baton(env, "run", f"{GUARDED}:{target}", "--input", json.dumps(data), "--runtime", "celery", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def finished(env, run_id: str, timeout: float = 60) -> dict:
    """The run as `baton show --json` reads it, once the store says it has ended (polled in this process:
    a `baton show` process a poll costs a core for a second)."""
    store = RunStore(env["BATON_DATABASE_URL"])
    try:
        deadline = time.monotonic() + timeout
        while store.runs.brief(run_id).status.value in ("pending", "running"):
            assert time.monotonic() < deadline, show(env, run_id)
            time.sleep(0.05)
    finally:
        store.close()
    return show(env, run_id)


def step_of(run: dict, name: str) -> dict:
    return next(s for s in run["steps"] if s["name"] == name)


def tasks_seen(env) -> list[dict]:
    return [json.loads(line) for line in (control(env) / "tasks.jsonl").read_text().splitlines()]


def test_attempts_past_their_timeout_fail_with_step_timeout_and_their_late_results_are_thrown_away(started):
    env = started
    run = finished(env, run_on_celery(env, "slow_twice", {"value": 1}))
    assert run["status"] == "succeeded", run
    assert run["output"] == {"attempt": 3}  # the third attempt's, not a late one's
    sluggish = step_of(run, "sluggish")
    assert sluggish["attempts"] == 3
    errors = [a["error"]["type"] for a in sluggish["attempt_errors"]]
    assert errors == ["StepTimeout", "StepTimeout"], sluggish
    # The abandoned attempts run on to their end in the worker; what they return is never checkpointed.
    for n in (1, 2):
        wait_for_file(control(env) / f"sluggish.{n}.late", timeout=10)
    again = finished(env, run["id"])
    assert again["output"] == {"attempt": 3} and step_of(again, "sluggish")["attempts"] == 3
    assert counts(env)["sluggish"] == 3


def test_a_timed_step_goes_as_a_task_of_its_own_under_celerys_hard_time_limit(started):
    # The hard limit is a backstop for work the executor cannot stop (native code holding the GIL); seeing it
    # kill a pool process would take its 30 s of grace, so this checks what every task of the step carries.
    env = started
    run = finished(env, run_on_celery(env, "slow_twice", {"value": 1}))
    assert run["status"] == "succeeded", run
    limits: dict[int, list] = {}  # the run's tasks' limits, by the step each started with (its 2nd argument)
    for task in tasks_seen(env):
        if task["args"] and task["args"][0] == run["id"]:
            limits.setdefault(task["args"][1], []).append(task["timelimit"])
    assert all(limit in (None, [None, None]) for limit in limits[0]), limits
    # The timed step: its first attempt and each retry (a task of its own every time) carry the hard limit.
    assert len(limits[1]) == 3 and all(limit[0] == HARD_LIMIT for limit in limits[1]), limits


def test_a_timeout_during_a_retry_fails_the_run_with_step_timeout_and_a_resume_finishes_it(started):
    env = started
    run = finished(env, run_on_celery(env, "flaky_then_slow", {"value": 1}))
    assert run["status"] == "failed", run
    wobbly = step_of(run, "wobbly")
    assert wobbly["status"] == "failed" and wobbly["attempts"] == 2
    assert wobbly["error"]["type"] == "StepTimeout", wobbly
    assert "ran past its timeout of 0.5 s" in wobbly["error"]["message"]
    assert [a["error"]["type"] for a in wobbly["attempt_errors"]][:1] == ["TransientError"], wobbly
    result = baton(env, "resume", run["id"], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = finished(env, run["id"])
    assert resumed["status"] == "succeeded", resumed
    assert resumed["output"] == {"attempt": 3}
    wait_for_file(control(env) / "wobbly.2.late", timeout=10)
    assert finished(env, run["id"])["output"] == {"attempt": 3}


def reply(text: str) -> tuple[int, dict, dict]:
    """A chat completion that says it spent `SPENT` tokens."""
    return (
        200,
        {},
        {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps({"text": text})}}],
            "usage": {"prompt_tokens": 150, "completion_tokens": SPENT - 150, "total_tokens": SPENT},
        },
    )  # fmt: skip


@pytest.fixture
def model_server(env):
    """The agents' OpenAI-compatible server; its answers take a moment, so that the workers' calls overlap."""
    with ScriptedHTTPServer([reply("found it")], delay=0.3) as server:
        env["BATON_OPENAI_BASE_URL"] = server.url + "/v1"
        env["OPENAI_API_KEY"] = "sk-test"
        yield server


def test_a_budget_reached_on_parallel_workers_stops_every_call_past_it_and_a_resume_with_more_finishes(
    model_server, env, workers, postgres_url
):
    # Two pool processes: each scout holds against the budget from one of them (a branch task each).
    workers.start(concurrency=2, imports=(GUARDED,))
    run = finished(env, run_on_celery(env, "survey", {"topic": "ACME"}))
    assert run["status"] == "failed", run
    by_name = {s["name"]: s for s in run["steps"]}
    scouts = [by_name[r] for r in REGIONS]
    done = [s["name"] for s in scouts if s["status"] == "succeeded"]
    refused = [s for s in scouts if s["status"] == "failed"]
    assert len(done) == 2 and len(refused) == 2, scouts
    for s in refused:
        assert s["error"]["type"] == "BudgetExceeded" and s["attempts"] == 1, s
        assert "run's spend" in s["error"]["message"] and "no call was made" in s["error"]["message"]
        # The sizing above holds: a call holds its prompt and its max_tokens, two fit and a third does not.
        held = int(re.search(r"a model call of up to ([\d,]+) tokens", s["error"]["message"])[1].replace(",", ""))
        assert 2 * held <= BUDGET < 3 * held and 2 * SPENT + held > BUDGET
    assert by_name["gather"]["status"] == "pending"
    # No worker started a call once the budget was reached: the server saw exactly the calls that fit.
    assert len(model_server.requests) == 2
    store = RunStore(postgres_url)
    try:
        (budget,) = store.budgets.for_run(run["id"])
        assert budget.spent_tokens == 2 * SPENT <= BUDGET
        assert budget.held_tokens == 0
    finally:
        store.close()

    result = baton(env, "resume", run["id"], "--budget-tokens", "20000", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = finished(env, run["id"])
    assert resumed["status"] == "succeeded", resumed
    assert len(model_server.requests) == 4  # only the two refused scouts called, once each
    again = {s["name"]: s for s in resumed["steps"]}
    assert all(again[name]["attempts"] == 1 for name in done)
    assert resumed["output"] == {"body": " | ".join(["found it"] * 4)}
    shown = json.loads(baton(env, "show", run["id"], "--json", check=0).stdout)
    assert [{**b, "spent_usd": 0} for b in shown["budgets"]] == [
        {"scope": "run", "tokens": 20000, "usd": None, "spent_tokens": 4 * SPENT, "spent_usd": 0}
    ]


def test_a_chain_budget_holds_the_subscribers_calls_on_other_workers(model_server, env, workers):
    workers.start(concurrency=2, imports=(GUARDED,))
    root = finished(env, run_on_celery(env, "herald", {"value": 7}))
    assert root["status"] == "succeeded", root
    subscriber = wait_for_run(env, "reader")
    assert subscriber["status"] == "failed", subscriber
    error = step_of(subscriber, "summarise")["error"]
    assert error["type"] == "BudgetExceeded" and "event chain's spend" in error["message"], error
    assert model_server.requests == []


def wait_for_run(env, pipeline: str) -> dict:
    """The first run of `pipeline` once it has ended."""
    deadline = time.monotonic() + 30
    while True:
        listed = json.loads(baton(env, "runs", "--pipeline", pipeline, "--json", check=0).stdout)
        if listed:
            return finished(env, listed[0]["id"])
        assert time.monotonic() < deadline, f"no run of {pipeline}"
        time.sleep(0.1)


def test_a_concurrency_cap_declared_by_setting_holds_across_two_worker_processes(model_server, env, workers):
    # Shared through the broker's Redis: the two pool processes (each running a branch) take turns.
    env["BATON_LIMITS"] = "openai:gpt-4o-mini concurrent=1"
    workers.start(concurrency=2, imports=(GUARDED,))
    run = finished(env, run_on_celery(env, "survey", {"topic": "ACME"}, "--budget-tokens", "100000"))
    assert run["status"] == "succeeded", run
    assert len(model_server.requests) == 4
    assert model_server.max_in_flight == 1
