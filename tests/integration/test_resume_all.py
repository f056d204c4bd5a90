"""`baton resume --all`: every run in a status listed (a dry run), then with --yes resumed on its own runtime,
one that cannot be resumed reported without stopping the others."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.integration.commands import baton, control, counts, wait_until_finished
from tests.integration.test_cli_process import start_blocked_run

APPS = Path(__file__).parent / "apps"
CONTROLLED = f"{APPS / 'controlled.py'}:controlled"
FLAKY = """
from pydantic import BaseModel
from baton import Pipeline, Retry, step

class N(BaseModel):
    n: int

@step(retry=Retry(max_attempts=1))
def once(x: N) -> N:
    raise ValueError("never works")

flaky = Pipeline("flaky", [once])
"""


@pytest.fixture
def local_env(database_url, tmp_path):
    folder = tmp_path / "control"
    folder.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    return environment | {"BATON_DATABASE_URL": database_url, "BATON_TEST_DIR": str(folder)}


def failed_runs(env, n: int) -> list[str]:
    (control(env) / "transform.fail").write_text("not yet")
    ran = [baton(env, "run", CONTROLLED, "--input", '{"value": 1}', "--json", check=1) for _ in range(n)]
    (control(env) / "transform.fail").unlink()
    return [json.loads(r.stdout)["id"] for r in ran]


def statuses(env) -> dict[str, str]:
    return {r["id"]: r["status"] for r in json.loads(baton(env, "runs", "--json", check=0).stdout)}


def test_without_yes_the_runs_are_listed_and_nothing_changes(local_env):
    env = local_env
    ids = failed_runs(env, 2)
    listed = baton(env, "resume", "--all", "--status", "failed", check=0)
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ids  # oldest first
    assert lines[0].split()[1:4] == ["controlled", "failed", "on"]
    assert lines[-1] == "2 failed runs would be resumed; add --yes to resume them"
    assert statuses(env) == dict.fromkeys(ids, "failed")
    assert counts(env) == {"fetch": 2, "transform": 2}

    as_json = json.loads(baton(env, "resume", "--all", "--status", "failed", "--json", check=0).stdout)
    assert [(r["id"], r["pipeline"], r["status"], r["runtime"]) for r in as_json] == [
        (i, "controlled", "failed", "local") for i in ids
    ]
    others = baton(env, "resume", "--all", "--status", "failed", "--pipeline", "billing", check=0).stdout
    assert others.strip() == "0 failed runs of pipeline 'billing' would be resumed; add --yes to resume them"
    recent = baton(env, "resume", "--all", "--status", "failed", "--older-than", "1h", check=0).stdout
    assert recent.strip() == "0 failed runs unchanged for 1h would be resumed; add --yes to resume them"
    time.sleep(1.1)
    older = baton(env, "resume", "--all", "--status", "failed", "--older-than", "1s", check=0).stdout
    assert "2 failed runs unchanged for 1s would be resumed" in older
    assert "0 interrupted runs would be resumed" in baton(env, "resume", "--all", "--status", "interrupted").stdout


def test_yes_resumes_each_run_and_one_that_cannot_be_is_reported_without_stopping_the_others(local_env, tmp_path):
    env = local_env
    (tmp_path / "flaky.py").write_text(FLAKY)
    flaky = json.loads(baton(env, "run", f"{tmp_path / 'flaky.py'}:flaky", "--input", '{"n": 1}', "--json").stdout)
    ids = failed_runs(env, 2)
    (tmp_path / "flaky.py").unlink()  # its code is gone: that run cannot be resumed

    result = baton(env, "resume", "--all", "--status", "failed", "--yes", check=1)
    out = result.stdout
    assert f"not resumed  {flaky['id']}  flaky: no such file: {tmp_path / 'flaky.py'}" in out
    for run_id in ids:
        assert f"resumed      {run_id}  controlled  on local" in out
        assert f"succeeded    {run_id}  controlled" in out  # a local run goes on in this process, which waits
    assert out.splitlines()[-1] == "resumed 2 of 3 failed runs; 1 could not be resumed"
    assert statuses(env) == {flaky["id"]: "failed"} | dict.fromkeys(ids, "succeeded")
    # The failed step ran again; the steps before it did not.
    assert counts(env) == {"fetch": 2, "transform": 4, "publish": 2}
    again = baton(env, "resume", "--all", "--status", "failed", "--yes", "--json", check=1)
    assert json.loads(again.stdout) == [
        {"id": flaky["id"], "pipeline": "flaky", "status": "failed", "runtime": "local",
         "updated_at": json.loads(again.stdout)[0]["updated_at"], "resumed": False,
         "error": f"no such file: {tmp_path / 'flaky.py'}", "ended": None},
    ]  # fmt: skip


def test_interrupted_runs_whose_process_died_are_found_and_resumed(local_env):
    env = local_env
    proc, run_id = start_blocked_run(env, "transform")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    listed = baton(env, "resume", "--all", "--status", "interrupted", check=0).stdout
    assert listed.startswith(f"{run_id}  controlled  interrupted") and "1 interrupted run would be" in listed
    (control(env) / "transform.block").unlink()
    done = baton(env, "resume", "--all", "--status", "interrupted", "--yes", check=0).stdout
    assert done.splitlines()[-1] == "resumed 1 of 1 interrupted run"
    assert statuses(env) == {run_id: "succeeded"}
    assert counts(env) == {"fetch": 1, "transform": 2, "publish": 1}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--all"], "--all needs --status: one of interrupted, failed, pending"),
        (["0123456789abcdef", "--all", "--status", "failed"], "give a RUN_ID or --all, not both"),
        (["--status", "failed"], "--status goes with --all"),
        (["--yes"], "--yes goes with --all"),
        ([], "give the RUN_ID to resume, or --all --status S"),
        (["--all", "--status", "failed", "--older-than", "soon"], "--older-than 'soon': write a number and a unit"),
        (["--all", "--status", "failed", "--from", "transform"], "--from resumes one run: give a RUN_ID"),
    ],
)
def test_resume_all_refuses_what_it_cannot_do_in_one_line(sqlite_url, args, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {"BATON_DATABASE_URL": sqlite_url}
    lines = baton(env, "resume", *args, check=2).stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), lines


def test_pending_celery_runs_whose_messages_were_lost_are_queued_again_and_each_runs_once(env, workers, broker):
    ids = [
        baton(env, "run", CONTROLLED, "--input", '{"value": 2}', "--runtime", "celery", check=0).stdout.strip()
        for _ in range(2)
    ]
    redis.Redis.from_url(broker).flushdb()  # Redis restarted without its data: the messages are gone
    listed = baton(env, "resume", "--all", "--status", "pending", check=0).stdout
    assert "2 pending runs would be resumed" in listed
    for _ in range(2):  # queued twice: a run whose message is delivered twice still runs once
        done = baton(env, "resume", "--all", "--status", "pending", "--yes", check=0).stdout
        assert [line.split()[1] for line in done.splitlines()[:2]] == ids
        assert done.count("on celery") == 2 and done.splitlines()[-1] == "resumed 2 of 2 pending runs"
    workers.start()
    for run_id in ids:
        run = wait_until_finished(env, run_id)
        assert run["status"] == "succeeded" and run["output"] == {"value": 35}
    assert counts(env) == {"fetch": 2, "transform": 2, "publish": 2}
