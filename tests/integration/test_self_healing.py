"""Runs heal themselves: lost work comes back with no person, outages of the store are waited out, and what
the database refuses fails the step with its error instead of looping.

Everything is real: `baton worker` processes SIGKILLed whole, Redis losing its messages (its database
flushed, as a restart without persistence does), and a PostgreSQL database that drops every connection and
refuses new ones for seconds (`ALLOW_CONNECTIONS false`, which is what a restart looks like to a client).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from tests.conftest import POSTGRES_ADMIN_URL
from tests.integration.commands import baton, control, counts, show, wait_until_finished
from tests.integration.serving import Served, free_port
from tests.integration.workers import wait_for_file

APPS = Path(__file__).parent / "apps"
CONTROLLED = f"{APPS / 'controlled.py'}:controlled"
ECHOING = f"{APPS / 'healing.py'}:echoing"
RETRYING = f"{APPS / 'healing.py'}:retrying"
FRAGILE = f"{APPS / 'healing.py'}:fragile"


def submit(env, target: str, data: dict) -> str:
    result = baton(env, "run", target, "--input", json.dumps(data), "--runtime", "celery", check=0)
    return result.stdout.strip()


@pytest.fixture
def healing_env(env) -> dict[str, str]:
    """Redis keeps a lost worker's message for ten minutes (the default): only baton's sweeper can bring
    the work back within the test."""
    env.update({"BATON_VISIBILITY_TIMEOUT": "600", "BATON_REQUEUE_AFTER": "2"})  # the workers' env too
    return env


@contextlib.contextmanager
def outage(database_url: str, seconds: float) -> Iterator[None]:
    """The database drops every connection and refuses new ones for `seconds`, then comes back."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            yield
            time.sleep(seconds)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def refuse_poison(database_url: str) -> None:
    """Make the database refuse any step output holding the word "poison" (a value it cannot store)."""
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("""
            CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
            BEGIN
                IF NEW.output::text LIKE '%poison%' THEN
                    RAISE EXCEPTION 'this database does not store poison' USING ERRCODE = '22023';
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        db.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON baton_steps FOR EACH ROW "
            "EXECUTE FUNCTION refuse_poison()"
        )


# -- lost work --------------------------------------------------------------------------------------------


def test_a_whole_worker_killed_mid_step_is_taken_over_within_the_lease(healing_env, workers):
    env = healing_env
    doomed = workers.start(concurrency=1)
    (control(env) / "transform.block").touch()
    run_id = submit(env, CONTROLLED, {"value": 1})
    wait_for_file(control(env) / "transform.started")
    spare = workers.start(concurrency=1)
    workers.kill(doomed)
    killed = time.monotonic()
    (control(env) / "transform.block").unlink()
    run = wait_until_finished(env, run_id, timeout=4 + 15)  # BATON_LEASE_SECONDS plus 15 s
    assert run["status"] == "succeeded", run
    assert time.monotonic() - killed < 4 + 15
    assert spare.poll() is None
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}
    assert "a step's lease ran out; queued again" in workers.logs()


def test_runs_whose_messages_the_broker_lost_finish_without_a_resume(healing_env, workers, broker):
    env = healing_env
    run_ids = [submit(env, CONTROLLED, {"value": v}) for v in range(4)]
    redis.Redis.from_url(broker).flushdb()  # Redis restarted without its data: every message is gone
    assert {show(env, r)["status"] for r in run_ids} == {"pending"}
    workers.start()
    for run_id, value in zip(run_ids, range(4), strict=True):
        run = wait_until_finished(env, run_id, timeout=30)
        assert run["status"] == "succeeded", run
        assert run["output"] == {"value": (value + 1) * 10 + 5}
    assert counts(env) == {"fetch": 4, "transform": 4, "publish": 4}
    assert "its message was lost; queued again" in workers.logs()


def test_a_run_between_steps_whose_next_message_was_lost_goes_on(healing_env, workers, broker):
    env = healing_env
    env["BATON_CELERY_HOP"] = "step"  # each step a message of its own
    worker = workers.start(concurrency=1)
    (control(env) / "transform.block").touch()
    run_id = submit(env, CONTROLLED, {"value": 1})
    wait_for_file(control(env) / "transform.started")
    workers.kill(worker)  # its step's lease runs out; its message stays with Redis for ten minutes
    redis.Redis.from_url(broker).flushdb()  # and then Redis loses it too
    (control(env) / "transform.block").unlink()
    workers.start(concurrency=1)
    run = wait_until_finished(env, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}


def test_a_redis_restart_is_noticed_and_its_lost_messages_sent_again_at_once(healing_env, workers, broker):
    env = healing_env
    env["BATON_REQUEUE_AFTER"] = "600"  # only noticing that Redis lost its data can heal within the test
    workers.start(concurrency=1)
    time.sleep(2)  # the sweeper has seen the broker's epoch key
    (control(env) / "fetch.block").touch()
    run_ids = [submit(env, CONTROLLED, {"value": v}) for v in range(3)]
    wait_for_file(control(env) / "fetch.started")  # the first holds the worker; the others wait in Redis
    redis.Redis.from_url(broker).flushdb()
    (control(env) / "fetch.block").unlink()
    for run_id in run_ids:
        assert wait_until_finished(env, run_id, timeout=30)["status"] == "succeeded"
    assert counts(env) == {"fetch": 3, "transform": 3, "publish": 3}
    assert "its message was lost; queued again" in workers.logs()


def test_a_run_waiting_out_a_retry_whose_message_was_lost_goes_on_after_its_countdown(healing_env, workers, broker):
    env = healing_env
    env["BATON_CELERY_HOP"] = "step"  # each step a message of its own
    (control(env) / "flaky.transient").write_text("1")
    doomed = workers.start(concurrency=1)
    run_id = submit(env, RETRYING, {"text": "hi"})
    deadline = time.monotonic() + 20
    while counts(env).get("flaky") != 1:  # its first attempt failed; the next waits two seconds in Redis
        assert time.monotonic() < deadline, counts(env)
        time.sleep(0.05)
    workers.kill(doomed)  # the countdown's message goes with the worker (Redis keeps it ten minutes)...
    redis.Redis.from_url(broker).flushdb()  # ...and then with Redis: no lease ran out, the run is just quiet
    workers.start(concurrency=1)
    run = wait_until_finished(env, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"text": "HI!"}
    assert counts(env) == {"echo": 1, "flaky": 2, "shout": 1}
    assert [s["attempts"] for s in run["steps"]] == [1, 2, 1]


def test_the_dashboard_shows_a_run_whose_message_is_presumed_lost_as_stalled(healing_env, broker, tmp_path):
    env = healing_env
    env["BATON_REQUEUE_AFTER"] = "5"
    server = Served(env, tmp_path / "serve.log")  # the local runtime: it does not sweep celery runs
    try:
        run_id = submit(env, CONTROLLED, {"value": 1})
        redis.Redis.from_url(broker).flushdb()
        assert 'id="run-stalled"' not in httpx.get(f"{server.url}/ui/runs/{run_id}/live").text  # just queued
        deadline = time.monotonic() + 15
        while 'id="run-stalled"' not in (page := httpx.get(f"{server.url}/ui/runs/{run_id}/live").text):
            assert time.monotonic() < deadline, page  # past BATON_REQUEUE_AFTER with an empty queue
            time.sleep(0.5)
        assert "stalled" in httpx.get(f"{server.url}/ui/runs").text
        # A run whose message waits in the queue (no worker runs yet) is queued, not stalled.
        queued = submit(env, CONTROLLED, {"value": 2})
        time.sleep(6)  # past BATON_REQUEUE_AFTER
        assert 'id="run-stalled"' not in httpx.get(f"{server.url}/ui/runs/{queued}/live").text
    finally:
        server.stop()


# -- errors told apart ------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["local", "celery"])
def test_a_value_the_database_refuses_fails_the_step_with_its_error_not_a_loop(runtime, healing_env, workers):
    env = healing_env
    baton(env, "runs", check=0)  # the tables exist
    refuse_poison(env["BATON_DATABASE_URL"])
    if runtime == "celery":
        workers.start()
        run_id = submit(env, ECHOING, {"text": "a little poison"})
    else:
        result = baton(env, "run", ECHOING, "--input", '{"text": "a little poison"}', "--json", check=1)
        run_id = json.loads(result.stdout)["id"]
    run = wait_until_finished(env, run_id, timeout=30)
    assert run["status"] == "failed", run
    echo = run["steps"][0]
    assert echo["status"] == "failed" and echo["attempts"] == 1  # not transient: not tried again
    assert "this database does not store poison" in echo["error"]["message"]
    time.sleep(2)
    assert counts(env) == {"echo": 1}  # and nothing runs it again behind the scenes


def test_a_bug_in_a_patterns_plan_fails_the_run_with_the_error_instead_of_looping(healing_env, workers):
    env = healing_env
    (control(env) / "plan.bug").touch()
    workers.start()
    run_id = submit(env, FRAGILE, {"text": "hello"})
    run = wait_until_finished(env, run_id, timeout=30)
    assert run["status"] == "failed", run
    shown = baton(env, "show", run_id, check=0).stdout
    assert "a bug in this pattern's plan" in shown
    time.sleep(2)
    assert counts(env) == {"echo": 1}  # its checkpoint stands; nothing goes round again


# -- outages waited out -----------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["local", "celery-threads", "celery-prefork"])
def test_a_database_outage_mid_run_is_waited_out_and_no_finished_step_runs_again(runtime, healing_env, workers):
    env = healing_env
    (control(env) / "transform.block").touch()
    if runtime.startswith("celery"):
        workers.start(pool=runtime.split("-")[1])
        run_id = submit(env, CONTROLLED, {"value": 1})
        proc = None
    else:
        proc = subprocess.Popen(
            [sys.executable, "-m", "baton", "run", CONTROLLED, "--input", '{"value": 1}', "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    wait_for_file(control(env) / "transform.started")
    with outage(env["BATON_DATABASE_URL"], seconds=5):
        # The step ends while the database is down: its checkpoint meets a dead connection.
        (control(env) / "transform.block").unlink()
    if proc is not None:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        run_id = json.loads(out)["id"]
        assert "Traceback" not in err, err
    run = wait_until_finished(env, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert [s["attempts"] for s in run["steps"]] == [1, 1, 1]
    assert counts(env) == {"fetch": 1, "transform": 1, "publish": 1}


def test_serve_answers_503_while_the_store_is_down_and_recovers_by_itself(env, tmp_path):
    server = Served(env, tmp_path / "serve.log")
    try:
        assert httpx.get(f"{server.url}/runs").status_code == 200
        with outage(env["BATON_DATABASE_URL"], seconds=0):
            down = httpx.get(f"{server.url}/runs")
            assert down.status_code == 503, down.text
            assert down.headers["Retry-After"].isdigit()
            name = env["BATON_DATABASE_URL"].rsplit("/", 1)[1]
            assert name not in down.text and "127.0.0.1" not in down.text and "postgres" not in down.text
            page = httpx.get(f"{server.url}/ui/runs")
            assert page.status_code == 503 and name not in page.text
        deadline = time.monotonic() + 10
        while (answer := httpx.get(f"{server.url}/runs")).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
    finally:
        server.stop()


def test_a_killed_server_started_again_resumes_the_local_runs_it_was_running(env, tmp_path):
    token = "healing-test-token"
    env = env | {"BATON_DASHBOARD_TOKEN": token}
    auth = {"Authorization": f"Bearer {token}"}
    serve_args = ("--import", str(APPS / "controlled.py"))
    (control(env) / "transform.block").touch()
    server = Served(env, tmp_path / "serve-1.log", *serve_args)
    try:
        answer = httpx.post(f"{server.url}/runs/controlled", json={"value": 1}, headers=auth, timeout=10)
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["id"]
        wait_for_file(control(env) / "transform.started")
    finally:
        server.kill()  # mid-step, the whole process group
    (control(env) / "transform.block").unlink()
    again = Served(env, tmp_path / "serve-2.log", *serve_args)
    try:
        run = wait_until_finished(env, run_id, timeout=30)
        assert run["status"] == "succeeded", run
        assert run["output"] == {"value": 25}
        assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}  # the lost attempt, and nothing else
        assert "its process died mid-run; resumed here" in (tmp_path / "serve-2.log").read_text()
    finally:
        again.stop()


@pytest.fixture
def own_redis(env, tmp_path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A Redis of the test's own, without persistence, and a way to restart it (losing every message)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path)]  # fmt: skip
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    url = f"redis://127.0.0.1:{port}/0"

    def ready() -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                return
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "the test's Redis did not start"
                time.sleep(0.05)

    def restart() -> None:
        procs[-1].kill()
        procs[-1].wait(10)
        time.sleep(1)
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ready()

    ready()
    env["BATON_BROKER_URL"] = url
    yield url, restart
    for proc in procs:
        proc.kill()
        proc.wait(10)


def test_a_redis_restart_with_a_step_in_flight_leaves_the_worker_up_and_the_run_finishes(
    healing_env, own_redis, workers
):
    env = healing_env
    _, restart = own_redis
    worker = workers.start(pool="threads")
    (control(env) / "transform.block").touch()
    run_id = submit(env, CONTROLLED, {"value": 1})
    wait_for_file(control(env) / "transform.started")
    restart()  # every message gone, every connection cut
    (control(env) / "transform.block").unlink()
    run = wait_until_finished(env, run_id, timeout=40)
    assert run["status"] == "succeeded", run
    assert worker.poll() is None, workers.logs()[-3000:]  # still serving
    later = submit(env, CONTROLLED, {"value": 2})
    assert wait_until_finished(env, later, timeout=40)["status"] == "succeeded"
    assert counts(env) == {"fetch": 2, "transform": 2, "publish": 2}  # each step of each run once
