"""The `baton` command as a user runs it: a real process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.commands import baton, control, counts

APPS = Path(__file__).parent / "apps"
BILLING = f"{APPS / 'billing.py'}:billing"
CONTROLLED = f"{APPS / 'controlled.py'}:controlled"


@pytest.fixture
def env(database_url, tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    environment |= {"BATON_DATABASE_URL": database_url, "BATON_TEST_DIR": str(control)}
    return environment


def test_run_prints_the_finished_run_as_show_does(env):
    result = baton(env, "run", BILLING, "--input", '{"customer": "Ada", "amounts": [1, 2]}', "--json", check=0)
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded"
    assert run["output"] == {"body": "Dear Ada, you owe 3.00."}
    assert set(run) == {
        "id",
        "pipeline",
        "status",
        "runtime",
        "input",
        "output",
        "steps",
        "tokens",
        "cost_usd",
        "input_boundary_tokens",
        "correlation_id",
        "trigger_event",
        "emitted_events",
        # When it was made, started, last resumed, ended, and how long its last go took.
        "created_at",
        "started_at",
        "resumed_at",
        "finished_at",
        "duration_ms",
    }
    step_keys = {"name", "status", "attempts", "output", "error", "tokens", "duration_ms"}
    assert [set(s) for s in run["steps"]] == [
        step_keys | {"cost_usd", "boundary_tokens", "calls", "attempt_errors"}
    ] * 2
    assert run["steps"][0]["tokens"] == {"input": 0, "output": 0}
    shown = json.loads(baton(env, "show", run["id"], "--json", check=0).stdout)
    assert shown == run
    listed = json.loads(baton(env, "runs", "--json", check=0).stdout)
    assert listed == [{k: v for k, v in run.items() if k not in ("steps", "emitted_events")}]


def test_input_can_come_from_a_file(env, tmp_path):
    (tmp_path / "in.json").write_text('{"customer": "Bo", "amounts": [2.5]}')
    result = baton(env, "run", BILLING, "--input", f"@{tmp_path / 'in.json'}", "--json", check=0)
    assert json.loads(result.stdout)["output"] == {"body": "Dear Bo, you owe 2.50."}


def test_bad_input_exits_2_naming_the_field_and_starts_nothing(env):
    result = baton(env, "run", BILLING, "--input", '{"customer": "Ada", "amounts": ["many"]}', check=2)
    assert "amounts.0" in result.stderr and "Invoice" in result.stderr
    assert json.loads(baton(env, "runs", "--json", check=0).stdout) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", BILLING, "--input", "{not json"], "not valid JSON"),
        (["run", "nowhere.py:thing", "--input", "{}"], "no such file"),
        (["run", BILLING], "Missing option '--input'"),
        (["run", f"{APPS / 'billing.py'}:Letter", "--input", "{}"], "not a baton pattern"),
        (["show", "0123456789abcdef"], "no run with id"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(env, args, needle):
    result = baton(env, *args, check=2)
    assert needle in result.stderr


def test_a_failed_run_exits_1_and_show_tells_which_step_and_why(env):
    (control(env) / "transform.fail").write_text("the transformer is broken")
    result = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--json", check=1)
    run = json.loads(result.stdout)
    assert run["status"] == "failed"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "failed", "pending"]
    error = run["steps"][1]["error"]
    assert error["type"] == "ValueError" and error["message"] == "the transformer is broken"
    assert "Traceback" in error["traceback"]
    table = baton(env, "show", run["id"], check=0).stdout
    assert "the transformer is broken" in table and "failed" in table
    failed = json.loads(baton(env, "runs", "--status", "failed", "--json", check=0).stdout)
    assert [r["id"] for r in failed] == [run["id"]]


def test_resume_continues_at_the_failed_step_and_never_reruns_finished_ones(env):
    (control(env) / "transform.fail").write_text("not yet")
    run = json.loads(baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--json", check=1).stdout)
    (control(env) / "transform.fail").unlink()
    resumed = json.loads(baton(env, "resume", run["id"], "--json", check=0).stdout)
    assert resumed["status"] == "succeeded"
    assert resumed["output"] == {"value": 25}
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}
    assert [s["attempts"] for s in resumed["steps"]] == [1, 2, 1]
    again = baton(env, "resume", run["id"], check=2)
    assert "already succeeded" in again.stderr
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}


def start_blocked_run(env, step_name):
    (control(env) / f"{step_name}.block").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "baton", "run", CONTROLLED, "--input", '{"value": 1}', "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = control(env) / f"{step_name}.started"
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.02)
    runs = json.loads(baton(env, "runs", "--json", check=0).stdout)
    assert len(runs) == 1
    return proc, runs[0]["id"]


def test_a_run_killed_mid_step_shows_interrupted_and_resumes_without_redoing_work(env):
    proc, run_id = start_blocked_run(env, "transform")
    shown = json.loads(baton(env, "show", run_id, "--json", check=0).stdout)
    assert shown["status"] == "running"
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "running", "pending"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    shown = json.loads(baton(env, "show", run_id, "--json", check=0).stdout)
    assert shown["status"] == "interrupted"
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "interrupted", "pending"]
    assert shown["steps"][1]["error"]["type"] == "Interrupted"
    listed = json.loads(baton(env, "runs", "--status", "interrupted", "--json", check=0).stdout)
    assert [r["id"] for r in listed] == [run_id]

    (control(env) / "transform.block").unlink()
    resumed = json.loads(baton(env, "resume", run_id, "--json", check=0).stdout)
    assert resumed["status"] == "succeeded" and resumed["output"] == {"value": 25}
    # transform ran twice (killed, then resumed); fetch and publish once each.
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}


def test_cancel_lets_the_current_step_finish_and_starts_nothing_after_it(env):
    proc, run_id = start_blocked_run(env, "transform")
    result = baton(env, "cancel", run_id, check=0)
    assert "cancel requested" in result.stdout
    (control(env) / "transform.block").unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    run = json.loads(out)
    assert run["status"] == "cancelled"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "cancelled"]
    assert counts(env) == {"fetch": 1, "transform": 1}
    assert "already cancelled" in baton(env, "cancel", run_id, check=2).stderr


def test_resume_refuses_when_the_pipelines_steps_changed(env):
    (control(env) / "publish.fail").write_text("no")
    run = json.loads(baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--json", check=1).stdout)
    changed = env | {"BATON_TEST_STEPS": "short"}
    result = baton(changed, "resume", run["id"], check=2)
    assert "recorded steps ['fetch', 'transform', 'publish']" in result.stderr
    assert "['fetch', 'publish']" in result.stderr


def test_run_shows_live_progress_per_step(env):
    result = baton(env, "run", CONTROLLED, "--input", '{"value": 1}', check=0)
    lines = result.stderr.splitlines()
    for name in ("fetch", "transform", "publish"):
        assert f"▶ {name}" in lines
        assert any(line.startswith(f"✓ {name} ") for line in lines)
    assert "succeeded" in result.stdout


def test_resume_and_resume_from_a_step_show_live_progress_of_the_steps_they_run(env):
    (control(env) / "publish.fail").write_text("no")
    run = json.loads(baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--json", check=1).stdout)
    (control(env) / "publish.fail").unlink()
    resumed = baton(env, "resume", run["id"], check=0).stderr.splitlines()
    retried = baton(env, "resume", run["id"], "--from", "transform", check=0).stderr.splitlines()
    for lines, ran in ((resumed, ["publish"]), (retried, ["transform", "publish"])):
        for name in ran:
            assert any(line.startswith(f"▶ {name} (attempt ") for line in lines), lines
            assert any(line.startswith(f"✓ {name} ") for line in lines), lines
    assert not any(line.startswith(("▶ fetch", "▶ transform")) for line in resumed)
    assert not any(line.startswith("▶ fetch") for line in retried)  # replayed from its checkpoint, not run


def test_a_resumed_or_retried_run_reports_the_duration_of_its_last_go_and_keeps_its_first_start(env, tmp_path):
    app = tmp_path / "slow_first.py"
    switch = tmp_path / "fail"
    app.write_text(
        "import time\nfrom pathlib import Path\nfrom pydantic import BaseModel\n"
        "from baton import Pipeline, Retry, step\n"
        "class N(BaseModel):\n    n: int\n"
        "@step(retry=Retry(max_attempts=1))\ndef slow(x: N) -> N:\n"
        f"    if Path({str(switch)!r}).exists():\n"
        "        time.sleep(2)\n        raise ValueError('slow, then failed')\n"
        "    return x\n"
        "slow_first = Pipeline('slow-first', [slow])\n"
    )
    switch.touch()
    failed = json.loads(baton(env, "run", f"{app}:slow_first", "--input", '{"n": 1}', "--json", check=1).stdout)
    assert failed["duration_ms"] >= 2000 and failed["resumed_at"] is None
    switch.unlink()
    for how in (["resume", failed["id"]], ["resume", failed["id"], "--from", "slow"]):
        again = json.loads(baton(env, *how, "--json", check=0).stdout)
        assert again["status"] == "succeeded" and again["started_at"] == failed["started_at"]
        assert again["resumed_at"] > failed["finished_at"], (how, again)
        last_go = datetime.fromisoformat(again["finished_at"]) - datetime.fromisoformat(again["resumed_at"])
        assert abs(again["duration_ms"] - last_go.total_seconds() * 1000) <= 1, (how, again)
    (listed,) = json.loads(baton(env, "runs", "--json", check=0).stdout)
    assert listed["duration_ms"] == again["duration_ms"]
    shown = baton(env, "show", failed["id"], check=0).stdout
    assert "resumed (UTC)" in shown and "(since resumed)" in shown


def test_an_unreachable_store_is_a_clear_error_that_hides_the_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["BATON_DATABASE_URL"] = "postgresql://postgres:s3cret-pw@127.0.0.1:1/test"
    result = baton(env, "runs", check=1)
    assert "cannot reach the run store" in result.stderr and "Connection refused" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_run_and_show_print_the_same_json_text(env, tmp_path):
    app = tmp_path / "ordered.py"
    app.write_text(
        "from pydantic import BaseModel\n"
        "from baton import Pipeline, step\n"
        "class Out(BaseModel):\n    zeta: int\n    alpha: int\n"
        "@step\ndef make(x: Out) -> Out:\n    return Out(zeta=x.zeta + 1, alpha=x.alpha)\n"
        "ordered = Pipeline('ordered', [make])\n"
    )
    ran = baton(env, "run", f"{app}:ordered", "--input", '{"zeta": 1, "alpha": 2}', "--json", check=0).stdout
    shown = baton(env, "show", json.loads(ran)["id"], "--json", check=0).stdout
    assert ran == shown
    assert list(json.loads(ran)["output"]) == ["zeta", "alpha"]


def test_show_prints_a_models_invalid_answer_and_the_validation_errors(env):
    result = baton(env, "run", f"{APPS / 'agents.py'}:tagger", "--input", '{"text": "hi"}', "--json", check=1)
    run = json.loads(result.stdout)
    error = run["steps"][0]["error"]
    assert error["type"] == "ContractViolation" and error["raw_output"] == '{"tags": ["a", "b", "c"]}'
    assert error["validation_errors"][0]["field"] == "tags"
    assert [c["outcome"] for c in run["steps"][0]["calls"]] == ["invalid", "invalid"]
    shown = baton(env, "show", run["id"], check=0).stdout
    assert "the model's last answer" in shown and '{"tags": ["a", "b", "c"]}' in shown
    assert "validation errors" in shown and "model calls" in shown
