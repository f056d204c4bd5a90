"""The same scenarios on both runtimes, as a user drives them: `baton run` in a process of its own (local),
or `baton run --runtime celery` with real `baton worker` processes on the machine's Redis (celery); the run
state in PostgreSQL. Processes are killed with SIGKILL mid-step, and executions are counted in files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis

from tests.integration.commands import baton, control, counts, show, wait_until_finished
from tests.integration.workers import Workers, on_both_brokers, use_broker, wait_for_file

APPS = Path(__file__).parent / "apps"
CONTROLLED = f"{APPS / 'controlled.py'}:controlled"
RESEARCH = f"{APPS / 'research.py'}:research"
SLOW_RETRY = f"{APPS / 'research.py'}:slow_retry"
SLOW_TAIL = f"{APPS / 'research.py'}:slow_tail"

# celery-step: the celery runtime with each pipeline step a task of its own (BATON_CELERY_HOP=step);
# celery-rabbitmq: the celery runtime with RabbitMQ as its broker.
RUNTIMES = ["local", "celery", "celery-step", "celery-rabbitmq"]


class Driver:
    """Starts runs the way a user would on one runtime, and waits for them through the store."""

    def __init__(self, variant: str, env: dict[str, str], workers: Workers) -> None:
        self.runtime = variant.split("-")[0]
        if variant == "celery-step":
            env["BATON_CELERY_HOP"] = "step"
        self.env = env
        self.workers = workers
        self.local: subprocess.Popen[str] | None = None
        if self.runtime == "celery":
            workers.start()

    def start(self, target: str, data: dict) -> str:
        """Start a run; returns its id as soon as the run is recorded."""
        if self.runtime == "celery":
            result = baton(self.env, "run", target, "--input", json.dumps(data), "--runtime", "celery", check=0)
            return result.stdout.strip()
        self.local = subprocess.Popen(
            [sys.executable, "-m", "baton", "run", target, "--input", json.dumps(data), "--json"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            ended = self.local.poll() is not None
            listed = json.loads(baton(self.env, "runs", "--json", "--limit", "1", check=0).stdout)
            if listed:
                return listed[0]["id"]
            assert not ended, self.local.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def finish(self, run_id: str) -> dict:
        if self.local is not None and self.local.poll() is None:
            self.local.communicate(timeout=60)
        return wait_until_finished(self.env, run_id)

    def resume(self, run_id: str) -> dict:
        result = baton(self.env, "resume", run_id, "--json")
        assert result.returncode in (0, 1), result.stderr
        return wait_until_finished(self.env, run_id)

    def retry(self, run_id: str, step: str) -> dict:
        result = baton(self.env, "resume", run_id, "--from", step, "--json")
        assert result.returncode in (0, 1), result.stderr
        return wait_until_finished(self.env, run_id)


def make_driver(request, env, workers) -> Driver:
    """The driver of the fixture's variant; on celery-rabbitmq, the tests' RabbitMQ is the broker."""
    if request.param.endswith("-rabbitmq"):
        use_broker(env, request.getfixturevalue("rabbitmq"))
    return Driver(request.param, env, workers)


@pytest.fixture(params=RUNTIMES)
def driver(request, env, workers) -> Driver:
    return make_driver(request, env, workers)


def test_a_pipeline_runs_to_the_end_each_step_once(driver, env):
    run = driver.finish(driver.start(CONTROLLED, {"value": 1}))
    assert run["status"] == "succeeded", run
    assert run["runtime"] == driver.runtime
    assert run["output"] == {"value": 25}
    assert [s["attempts"] for s in run["steps"]] == [1, 1, 1]
    assert counts(env) == {"fetch": 1, "transform": 1, "publish": 1}


def test_a_step_killed_mid_way_runs_again_and_finished_steps_never_do(driver, env, workers):
    (control(env) / "transform.block").touch()
    run_id = driver.start(CONTROLLED, {"value": 1})
    pid = int(wait_for_file(control(env) / "transform.started"))
    if driver.runtime == "celery":
        spare = workers.start()  # the step goes on here when the worker running it is gone
        workers.kill(workers.group_of(pid))
        assert spare.poll() is None
    else:
        os.kill(pid, signal.SIGKILL)
        driver.local.wait(timeout=10)
    (control(env) / "transform.block").unlink()
    if driver.runtime == "celery":
        run = driver.finish(run_id)  # on its own: the broker gives the step to the other worker
    else:
        assert show(env, run_id)["status"] == "interrupted"
        run = driver.resume(run_id)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"value": 25}
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}
    assert run["steps"][1]["attempts"] == 2


def test_a_supervisor_resume_reruns_only_the_failed_worker_then_the_merge(driver, env):
    (control(env) / "news.fail").write_text("the news feed is down")
    ask = {"topic": "ACME", "want": ["financials", "news", "risks"]}
    run = driver.finish(driver.start(RESEARCH, ask))
    assert run["status"] == "failed", run
    by_name = {s["name"]: s for s in run["steps"]}
    assert by_name["news"]["status"] == "failed"
    assert by_name["news"]["error"]["message"] == "the news feed is down"
    assert by_name["financials"]["status"] == by_name["risks"]["status"] == "succeeded"
    assert by_name["draft"]["status"] == "pending"
    (control(env) / "news.fail").unlink()
    resumed = driver.resume(run["id"])
    assert resumed["status"] == "succeeded", resumed
    assert resumed["output"] == {"body": "financials: ACME | news: ACME | risks: ACME"}
    assert counts(env) == {"plan": 1, "financials": 1, "news": 2, "risks": 1, "draft": 1}


def test_retry_from_a_chosen_step_reruns_it_and_the_steps_after_it_only(driver, env):
    run = driver.finish(driver.start(CONTROLLED, {"value": 1}))
    assert run["status"] == "succeeded", run
    retried = driver.retry(run["id"], "transform")
    assert retried["status"] == "succeeded", retried
    assert retried["output"] == {"value": 25}
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 2}
    transform = retried["steps"][1]
    assert transform["attempts"] == 2  # numbered after the discarded one, which the history keeps
    assert [e["error"]["type"] for e in transform["attempt_errors"]] == ["Rewound"]
    assert retried["steps"][2]["attempts"] == 2  # the step after it counts on too


def test_a_supervisor_retried_from_a_worker_reruns_that_lane_and_the_merge_only(driver, env):
    ask = {"topic": "ACME", "want": ["financials", "news", "risks"]}
    run = driver.finish(driver.start(RESEARCH, ask))
    assert run["status"] == "succeeded", run
    retried = driver.retry(run["id"], "news")
    assert retried["status"] == "succeeded", retried
    assert counts(env)["plan"] == 1 and counts(env)["financials"] == counts(env)["risks"] == 1
    assert counts(env)["news"] == counts(env)["draft"] == 2


def test_a_supervisor_skips_the_workers_its_router_did_not_choose(driver, env):
    run = driver.finish(driver.start(RESEARCH, {"topic": "ACME", "want": ["news"]}))
    assert run["status"] == "succeeded", run
    assert [s["status"] for s in run["steps"]] == ["succeeded", "skipped", "succeeded", "skipped", "succeeded"]
    assert run["output"] == {"body": "news: ACME"}
    assert counts(env) == {"plan": 1, "news": 1, "draft": 1}


def test_routing_to_an_unknown_worker_fails_at_the_routers_boundary(driver, env):
    run = driver.finish(driver.start(RESEARCH, {"topic": "route-to-nowhere", "want": []}))
    assert run["status"] == "failed"
    router = run["steps"][0]
    assert router["status"] == "failed"
    assert router["error"]["type"] == "ContractViolation"
    assert "weather" in router["error"]["message"] and "plan" in router["error"]["message"]
    assert [s["status"] for s in run["steps"][1:]] == ["pending"] * 4
    assert counts(env) == {"plan": 1}


def test_transient_failures_are_retried_with_backoff_and_every_attempt_kept(driver, env):
    (control(env) / "news.transient").write_text("2")
    run = driver.finish(driver.start(RESEARCH, {"topic": "ACME", "want": ["news"]}))
    assert run["status"] == "succeeded", run
    news = run["steps"][2]
    assert news["attempts"] == 3
    assert counts(env)["news"] == 3


def test_a_merge_that_fails_transiently_is_retried_after_the_workers(driver, env):
    (control(env) / "draft.transient").write_text("1")
    run = driver.finish(driver.start(RESEARCH, {"topic": "ACME", "want": ["financials", "news"]}))
    assert run["status"] == "succeeded", run
    assert run["steps"][-1]["attempts"] == 2
    assert counts(env) == {"plan": 1, "financials": 1, "news": 1, "draft": 2}


# -- what only the celery runtime has -------------------------------------------------------------------


@on_both_brokers
def test_celery_run_returns_the_id_at_once_and_waits_in_the_queue_for_a_worker(env, workers):
    started = time.monotonic()
    result = baton(env, "run", CONTROLLED, "--input", '{"value": 2}', "--runtime", "celery", check=0)
    run_id = result.stdout.strip()
    assert time.monotonic() - started < 30
    assert show(env, run_id)["status"] == "pending"
    time.sleep(0.5)
    assert show(env, run_id)["status"] == "pending"  # nobody took it: no worker runs yet
    workers.start()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded" and run["output"] == {"value": 35}


def test_a_run_whose_message_the_broker_lost_is_queued_again_by_resume(env, workers, broker):
    run_id = baton(env, "run", CONTROLLED, "--input", '{"value": 2}', "--runtime", "celery", check=0).stdout.strip()
    redis.Redis.from_url(broker).flushdb()  # Redis restarted without its data: the message is gone
    assert show(env, run_id)["status"] == "pending"
    assert "resumed on the celery runtime" in baton(env, "resume", run_id, check=0).stderr
    workers.start()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded" and run["output"] == {"value": 35}
    assert counts(env) == {"fetch": 1, "transform": 1, "publish": 1}


def test_resume_refuses_a_celery_run_a_worker_is_executing(env, workers):
    workers.start()
    (control(env) / "fetch.block").touch()
    run_id = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery", check=0).stdout.strip()
    wait_for_file(control(env) / "fetch.started")
    refused = baton(env, "resume", run_id, check=2)
    assert "a worker is executing fetch right now" in refused.stderr
    (control(env) / "fetch.block").unlink()
    assert wait_until_finished(env, run_id)["status"] == "succeeded"


@on_both_brokers
def test_a_killed_prefork_child_is_replaced_and_its_step_runs_again_at_once(env, workers):
    worker = workers.start(concurrency=1)
    (control(env) / "transform.block").touch()
    run_id = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery", check=0).stdout.strip()
    child = int(wait_for_file(control(env) / "transform.started"))
    assert child != worker.pid
    (control(env) / "transform.started").unlink()
    os.kill(child, signal.SIGKILL)  # rejected on worker lost: the message goes back to the queue at once
    second = int(wait_for_file(control(env) / "transform.started", timeout=20))
    assert second != child
    (control(env) / "transform.block").unlink()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded", run
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}
    transform = run["steps"][1]
    assert transform["attempts"] == 2
    full = baton(env, "show", run_id, check=0).stdout
    assert "Interrupted" in full and "stopped before the step finished" in full


def test_a_step_delivered_twice_runs_once(env, workers):
    from baton.runtime.celery import QUEUE, celery_app
    from baton.settings import current_settings

    workers.start(concurrency=2)
    (control(env) / "fetch.block").touch()
    run_id = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery", check=0).stdout.strip()
    wait_for_file(control(env) / "fetch.started")
    # A second delivery of the same step while the first still runs (what a redelivery after a visibility
    # timeout looks like): the second worker finds the step leased and must not run it.
    os.environ["BATON_BROKER_URL"] = env["BATON_BROKER_URL"]
    try:
        celery_app.cache_clear()
        celery_app(current_settings()).send_task("baton.step", args=(run_id, 0, 1), queue=QUEUE)
    finally:
        del os.environ["BATON_BROKER_URL"]
        celery_app.cache_clear()
    deadline = time.monotonic() + 10
    while "retry: Retry in" not in workers.logs():
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.05)
    (control(env) / "fetch.block").unlink()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded"
    time.sleep(5)  # past the lease: the duplicate comes back, finds the checkpoint, and does nothing
    assert counts(env) == {"fetch": 1, "transform": 1, "publish": 1}
    assert show(env, run_id)["steps"][0]["attempts"] == 1


@on_both_brokers
def test_a_retry_waits_in_the_broker_while_the_worker_serves_other_runs(env, workers):
    workers.start(concurrency=1, pool="solo")  # one step at a time: a sleeping retry would block the rest
    (control(env) / "flaky_fetch.transient").write_text("1")
    flaky = baton(env, "run", SLOW_RETRY, "--input", '{"text": "a"}', "--runtime", "celery", check=0).stdout.strip()
    deadline = time.monotonic() + 20
    while counts(env).get("flaky_fetch", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    other = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery", check=0).stdout.strip()
    quick = wait_until_finished(env, other)
    assert quick["status"] == "succeeded"
    slow = wait_until_finished(env, flaky)
    assert slow["status"] == "succeeded" and slow["output"] == {"text": "a fetched"}
    assert slow["steps"][0]["attempts"] == 2
    # One step at a time: had the retry slept in the worker, the other run, queued while it was due later,
    # could only have ended after it. (Not "still running when the other ended": the other run may take
    # longer than the countdown to end, on a loaded machine, and the retry then rightly goes first.)
    due = datetime.fromisoformat(slow["steps"][0]["attempt_errors"][0]["finished_at"]) + timedelta(seconds=8)
    assert datetime.fromisoformat(quick["created_at"]) < due, "the other run came after the retry was due"
    assert quick["finished_at"] < slow["finished_at"]


@on_both_brokers
def test_cancel_stops_a_celery_run_after_its_current_step(env, workers):
    workers.start()
    (control(env) / "transform.block").touch()
    run_id = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery", check=0).stdout.strip()
    wait_for_file(control(env) / "transform.started")
    assert "cancel requested" in baton(env, "cancel", run_id, check=0).stdout
    (control(env) / "transform.block").unlink()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "cancelled"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "cancelled"]
    assert "publish" not in counts(env)


@on_both_brokers
def test_the_python_api_submits_to_celery_and_waits_on_the_store(env, workers, monkeypatch):
    import baton
    from baton._loader import load_target
    from baton.runtime.celery import celery_app

    workers.start()
    for key in ("BATON_BROKER_URL", "BATON_RESULT_BACKEND", "BATON_TEST_DIR"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    celery_app.cache_clear()
    try:
        research = load_target(RESEARCH)
        store = baton.RunStore(env["BATON_DATABASE_URL"])
        run_id = research.submit({"topic": "ACME", "want": ["financials", "risks"]}, store=store, runtime="celery")
        run = baton.wait(run_id, store=store, timeout=60)
        assert run.status is baton.RunStatus.SUCCEEDED
        assert run.output == {"body": "financials: ACME | risks: ACME"}
        again = research.run({"topic": "Initech", "want": ["news"]}, store=store, runtime="celery")
        assert again.output == {"body": "news: Initech"}
        store.close()
    finally:
        celery_app.cache_clear()


@pytest.mark.parametrize("url", ["redis://:s3cret@127.0.0.1:1/0", "amqp://baton:s3cret@127.0.0.1:1/0"])
def test_a_worker_whose_broker_is_unreachable_says_so_and_exits_1_without_its_password(env, url):
    env = env | {"BATON_BROKER_URL": url, "BATON_RESULT_BACKEND": "redis://127.0.0.1:1/0"}
    result = baton(env, "worker", check=1)
    scheme = url.split(":")[0]
    assert f"cannot reach the Celery broker at {scheme}://" in result.stderr and "127.0.0.1:1/0" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_a_worker_that_cannot_import_the_pipeline_fails_the_step_with_why(env, workers):
    workers.env = env | {"BATON_TEST_BROKEN_IMPORT": "1"}
    workers.start()
    run_id = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery", check=0).stdout.strip()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "failed"
    error = run["steps"][0]["error"]
    assert error["type"] == "ImportError" and "cannot import the pipeline's code" in error["message"]
    assert counts(env) == {}


def test_a_step_that_kills_its_worker_every_time_fails_after_three_deaths(env, workers):
    workers.start(concurrency=1)
    (control(env) / "transform.crash").touch()
    run_id = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery", check=0).stdout.strip()
    run = wait_until_finished(env, run_id, timeout=90)
    assert run["status"] == "failed"
    transform = run["steps"][1]
    assert "its worker died 3 times" in transform["error"]["message"]
    assert counts(env) == {"fetch": 1, "transform": 3}


@on_both_brokers
def test_cancelling_a_supervisor_keeps_the_workers_in_flight_and_skips_the_merge(env, workers):
    workers.start()
    (control(env) / "news.block").touch()
    ask = '{"topic": "ACME", "want": ["financials", "news"]}'
    run_id = baton(env, "run", RESEARCH, "--input", ask, "--runtime", "celery", check=0).stdout.strip()
    wait_for_file(control(env) / "news.started")
    assert "cancel requested" in baton(env, "cancel", run_id, check=0).stdout
    (control(env) / "news.block").unlink()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "cancelled"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "succeeded", "skipped", "cancelled"]
    assert "draft" not in counts(env)


@pytest.mark.parametrize(
    ("hop", "broker"), [("run", "redis"), ("step", "redis"), ("run", "rabbitmq")], indirect=["broker"]
)
def test_a_retry_of_a_cancelled_run_drops_the_old_countdowns_message(env, workers, hop):
    env["BATON_CELERY_HOP"] = hop
    workers.start()
    (control(env) / "flaky_fetch.transient").write_text("1")
    run_id = baton(env, "run", SLOW_TAIL, "--input", '{"text": "a"}', "--runtime", "celery", check=0).stdout.strip()
    deadline = time.monotonic() + 20
    while counts(env).get("flaky_fetch", 0) < 1:  # failed once; its retry waits 3 s in the broker
        assert time.monotonic() < deadline
        time.sleep(0.02)
    failed_at = time.monotonic()
    assert json.loads(baton(env, "cancel", run_id, "--json").stdout)["status"] == "cancelled"
    (control(env) / "lead.block").touch()
    baton(env, "resume", run_id, "--from", "lead", "--json", check=0)
    wait_for_file(control(env) / "lead.started")
    time.sleep(max(0.0, failed_at + 4.5 - time.monotonic()))  # the old message came, found no input, went
    waiting = show(env, run_id)
    assert waiting["status"] in ("pending", "running"), json.dumps(waiting)[:3000]
    (control(env) / "lead.block").unlink()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"text": "a fetched"}
    assert counts(env) == {"lead": 2, "flaky_fetch": 2}
