"""What only RabbitMQ as the broker has: a lost worker's message comes back the moment its connection drops,
queued messages outlive a restart of RabbitMQ, and a fan-out needs a result backend that can count it.
(The runtime scenarios themselves run on RabbitMQ too: the `celery-rabbitmq` variant of test_runtimes.py.)
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.integration.commands import baton, control, counts, show, wait_until_finished
from tests.integration.workers import use_broker, wait_for_file

APPS = Path(__file__).parent / "apps"
CONTROLLED = f"{APPS / 'controlled.py'}:controlled"


def start_run(env, value: int) -> str:
    return baton(
        env, "run", CONTROLLED, "--input", json.dumps({"value": value}), "--runtime", "celery", check=0
    ).stdout.strip()


def test_a_whole_worker_sigkilled_gives_its_step_back_as_soon_as_its_connection_drops(env, workers, rabbitmq):
    use_broker(env, rabbitmq)
    # Neither Redis's timer nor a lease running out could bring the step back within the test.
    env |= {"BATON_VISIBILITY_TIMEOUT": "600", "BATON_LEASE_SECONDS": "60"}
    first = workers.start(concurrency=1)
    (control(env) / "transform.block").touch()
    run_id = start_run(env, 1)
    pid = int(wait_for_file(control(env) / "transform.started"))
    assert workers.group_of(pid) is first
    (control(env) / "transform.started").unlink()
    workers.start(concurrency=1)
    workers.kill(first)
    killed_at = time.monotonic()
    second = int(wait_for_file(control(env) / "transform.started"))
    assert time.monotonic() - killed_at < 5  # redelivered at once, and taken over from the dead worker
    assert second != pid
    (control(env) / "transform.block").unlink()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded", run
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}
    assert run["steps"][1]["attempt_errors"][0]["error"]["type"] == "Interrupted"


def restart_rabbitmq() -> None:
    for command in ("stop_app", "start_app", "await_startup"):
        subprocess.run(["rabbitmqctl", command], check=True, capture_output=True, timeout=60)


def test_a_restart_of_rabbitmq_loses_no_queued_run_and_runs_no_step_twice(env, workers, rabbitmq):
    use_broker(env, rabbitmq)
    workers.start(concurrency=1)
    (control(env) / "transform.block").touch()
    in_flight = start_run(env, 1)
    wait_for_file(control(env) / "transform.started")
    queued = start_run(env, 2)  # waits in the queue: the worker's one process is busy
    time.sleep(0.5)
    assert show(env, queued)["status"] == "pending"
    restart_rabbitmq()  # durable queue, persistent messages: both come back; the worker reconnects
    (control(env) / "transform.block").unlink()
    first, second = wait_until_finished(env, in_flight), wait_until_finished(env, queued)
    assert (first["status"], first["output"]) == ("succeeded", {"value": 25})
    assert (second["status"], second["output"]) == ("succeeded", {"value": 35})
    assert counts(env) == {"fetch": 2, "transform": 2, "publish": 2}


def test_without_a_result_backend_worker_and_run_refuse_at_once_naming_the_setting(env, rabbitmq):
    env = env | {"BATON_BROKER_URL": rabbitmq}
    env.pop("BATON_RESULT_BACKEND", None)
    run = ["run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery"]
    for args in (["worker"], run, ["serve", "--runtime", "celery", "--port", "1"]):
        refused = baton(env, *args, check=2)
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "BATON_RESULT_BACKEND must be set when the broker is not Redis" in refused.stderr
    assert json.loads(baton(env, "runs", "--json").stdout) == []  # the run was refused before it was recorded
