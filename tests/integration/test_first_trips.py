"""What a new user trips over at the command line, each answered in one line that says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.commands import baton

APPS = Path(__file__).parent / "apps"
BILLING = f"{APPS / 'billing.py'}:billing"
INVOICE = '{"customer": "Ada", "amounts": [1, 2]}'

GATED_APP = """
from pydantic import BaseModel
from baton import Pipeline, step

class Note(BaseModel):
    text: str

@step
def draft(n: Note) -> Note:
    return Note(text=n.text + "!")

@step(approval=True)
def publish(n: Note) -> Note:
    return n

gated = Pipeline("gated", [draft, publish])
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}


# Every command that only reads or acts on recorded runs (a full-length id that no store holds).
READERS = [
    ["show", "0" * 32], ["runs"], ["resume", "0" * 32], ["resume", "--all", "--status", "failed"],
    ["cancel", "0" * 32], ["approve", "0" * 32], ["reject", "0" * 32], ["trace", "0" * 32], ["events"],
    ["events", "replay", "0" * 32], ["events", "dispatch"], ["effects"], ["effects", "mark", "k", "--done"],
]  # fmt: skip


def test_commands_that_read_runs_say_there_is_no_store_and_leave_none_behind(tmp_path):
    env = clean_env()
    for args in READERS:
        result = baton(env, *args, check=2, cwd=tmp_path)
        expected = "error: no run store here (./.baton/baton.db does not exist); run a pipeline first, or set"
        assert result.stderr.startswith(expected) and len(result.stderr.splitlines()) == 1, (args, result.stderr)
        assert list(tmp_path.iterdir()) == [], args  # no empty database, no folder for it
    # A command that records a run makes the store; then the readers find it.
    run_id = json.loads(baton(env, "run", BILLING, "--input", INVOICE, "--json", check=0, cwd=tmp_path).stdout)["id"]
    assert (tmp_path / ".baton" / "baton.db").is_file()
    assert [r["id"] for r in json.loads(baton(env, "runs", "--json", check=0, cwd=tmp_path).stdout)] == [run_id]


def test_a_postgres_database_that_does_not_exist_is_one_line_naming_the_setting(postgres_url):
    missing = postgres_url.rsplit("/", 1)[0] + f"/baton_missing_{uuid.uuid4().hex[:8]}"
    host = missing.split("@", 1)[1].split("/", 1)[0]
    env = clean_env() | {"BATON_DATABASE_URL": missing.replace("postgresql://postgres@", "postgresql://postgres:pw@")}
    for args in (["runs"], ["run", BILLING, "--input", INVOICE]):
        result = baton(env, *args, check=2)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "the database of BATON_DATABASE_URL" in result.stderr and "does not exist" in result.stderr
        assert f"createdb -h {host.split(':')[0]}" in result.stderr and missing.rsplit("/", 1)[1] in result.stderr
        assert ":pw@" not in result.stderr and ":***@" in result.stderr


@pytest.fixture
def env(sqlite_url):
    return clean_env() | {"BATON_DATABASE_URL": sqlite_url}


def test_a_run_id_prefix_too_short_says_how_long_it_must_be_wherever_ids_are_taken(env):
    run_id = json.loads(baton(env, "run", BILLING, "--input", INVOICE, "--json", check=0).stdout)["id"]
    short = run_id[:4]
    for args in (
        ["show", short], ["resume", short], ["resume", short, "--from", "add_up"], ["cancel", short],
        ["approve", short], ["reject", short], ["trace", short], ["effects", "--run", short],
    ):  # fmt: skip
        result = baton(env, *args, check=2)
        assert result.stderr == f"error: run id prefix '{short}' is too short: give at least 8 characters\n", args
    replayed = baton(env, "events", "replay", short, check=2)
    assert f"event id prefix '{short}' is too short: give at least 8 characters" in replayed.stderr
    assert json.loads(baton(env, "show", run_id[:8], "--json", check=0).stdout)["id"] == run_id


def test_a_chain_named_by_a_short_correlation_id_of_its_own_is_traced_not_refused_as_a_prefix(env, sqlite_url):
    import baton as api

    store = api.RunStore(sqlite_url)
    try:
        api.publish("order.noticed", {"order": 1}, store=store, correlation_id="4711")
    finally:
        store.close()
    tree = baton(env, "trace", "4711", check=0).stdout
    assert "4711" in tree and "order.noticed" in tree
    assert baton(env, "trace", "4712", check=2).stderr.startswith("error: run id prefix '4712' is too short")


def test_show_of_a_rejected_run_says_who_stopped_it_before_which_step_and_why(env, tmp_path):
    (tmp_path / "gated.py").write_text(GATED_APP)
    target = f"{tmp_path / 'gated.py'}:gated"
    run_id = json.loads(baton(env, "run", target, "--input", '{"text": "hi"}', "--json", check=0).stdout)["id"]
    baton(env, "reject", run_id, "--reason", "the numbers are wrong", check=0)
    shown = baton(env, "show", run_id, check=0).stdout
    (line,) = [line for line in shown.splitlines() if line.startswith("rejected")]
    assert "before step publish" in line and "UTC: the numbers are wrong" in line
    history = json.loads(baton(env, "show", run_id, "--json", check=0).stdout)["steps"][1]["attempt_errors"]
    assert history[0]["error"]["type"] == "Rejected" and history[0]["error"]["message"].endswith("numbers are wrong")
    other = json.loads(baton(env, "run", target, "--input", '{"text": "ho"}', "--json", check=0).stdout)["id"]
    baton(env, "reject", other, check=0)
    assert "UTC: (no reason given)" in baton(env, "show", other, check=0).stdout
    # Retried, then cancelled: the rejection is history, not what stopped it.
    baton(env, "resume", run_id, "--from", "draft", check=0)
    baton(env, "cancel", run_id, check=0)
    assert not [line for line in baton(env, "show", run_id, check=0).stdout.splitlines() if "rejected" in line]


def test_a_mistyped_target_suggests_the_closest_name_in_one_line(env):
    result = baton(env, "run", "baton.examples.triage:triag", "--input", "{}", check=2)
    assert result.stderr == "error: baton.examples.triage has no attribute 'triag'; did you mean 'triage'?\n"
    result = baton(env, "run", "baton.exampels.triage:triage", "--input", "{}", check=2)
    assert result.stderr.endswith("; did you mean 'baton.examples.triage'?\n") and len(result.stderr.splitlines()) == 1


PUBLISHER = """
import baton
from pydantic import BaseModel
from baton import on, step

class Order(BaseModel):
    n: int

@on("order.placed")
@step
def ship(o: Order) -> Order:
    return o

print(baton.publish("order.placed", {"n": 1}))
"""


def test_a_script_that_publishes_an_event_and_ends_waits_for_the_run_it_started(env, tmp_path):
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    ended = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 0 and "Traceback" not in ended.stderr, ended.stderr
    (run,) = json.loads(baton(env, "runs", "--json", check=0).stdout)
    assert (run["pipeline"], run["status"]) == ("ship", "succeeded")
