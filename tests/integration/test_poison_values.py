"""Values no store can keep (a NUL character in text) are refused at the boundary as a contract error naming
the field, alike on SQLite and PostgreSQL; text kept only to be read (an error, a model's answer) has each
NUL written out as `\\u0000` instead, so that a failure is always recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

import baton
from baton import Agent, InvalidInput, Pipeline, Retry, RunStatus, ScriptedModel, emit, on, step
from baton.web.access import Access
from baton.web.app import create_app
from tests.integration.commands import baton as baton_cli

TOKEN = "poison-test-token"
BILLING = f"{Path(__file__).parent / 'apps' / 'billing.py'}:billing"


class Line(BaseModel):
    text: str = Field(max_length=100)


class Note(BaseModel):
    title: str = Field(max_length=100)
    lines: list[Line] = Field(default=[], max_length=10)
    tags: dict[str, str] = Field(default={}, max_length=10)


@step(retry=Retry(max_attempts=1))
def poisoned(note: Note) -> Note:
    """Puts a NUL where the note's title says."""
    if note.title == "in a list":
        return Note(title="ok", lines=[Line(text="fine"), Line(text="a\x00b")])
    if note.title == "in a key":
        return Note(title="ok", tags={"k\x00": "v"})
    if note.title == "in an event":
        emit("test.poison.note", Note(title="x", lines=[Line(text="\x00")]))
    if note.title == "in an error":
        raise ValueError("a bad byte \x00 here")
    return note


POISON = Pipeline("test-poison", [poisoned])


@on("test.poison.note")
@step(name="test_poison_reader")
def reader(note: Note) -> Note:
    return note


def test_an_output_holding_nul_fails_its_step_naming_the_field(any_store):
    run = POISON.run({"title": "in a list"}, store=any_store)
    assert run.status is RunStatus.FAILED
    error = run.steps[0].error
    assert error.type == "ContractViolation"
    assert "step 'poisoned': output violates contract Note: field 'lines.1.text'" in error.message
    assert [e["field"] for e in error.validation_errors] == ["lines.1.text"]
    assert any_store.runs.get(run.id) == run  # the failure itself was stored

    keyed = POISON.run({"title": "in a key"}, store=any_store)
    assert keyed.status is RunStatus.FAILED
    assert "field 'tags.k\\u0000': the key holds a NUL character" in keyed.steps[0].error.message


@pytest.mark.parametrize(
    "given",
    [{"title": "a\x00"}, '{"title": "ok", "lines": [{"text": "\\u0000"}]}', Note(title="ok", tags={"a": "\x00"})],
    ids=["dict", "json", "model"],
)
def test_an_input_holding_nul_is_refused_naming_the_field_and_nothing_starts(any_store, given):
    with pytest.raises(
        InvalidInput, match=r"input of the run violates contract Note: field '(title|lines\.0\.text|tags\.a)'"
    ):
        POISON.run(given, store=any_store)
    with pytest.raises(InvalidInput, match="NUL"):
        POISON.submit(given, store=any_store)
    assert any_store.runs.list() == []


def test_a_text_that_only_looks_like_the_escape_is_kept_as_it_is(any_store):
    run = POISON.run({"title": "a backslash: \\u0000"}, store=any_store)
    assert run.status is RunStatus.SUCCEEDED and run.output["title"] == "a backslash: \\u0000"


def test_an_error_holding_nul_is_recorded_with_the_nul_written_out(any_store):
    run = POISON.run({"title": "in an error"}, store=any_store)
    assert run.status is RunStatus.FAILED
    error = any_store.runs.get(run.id).steps[0].error
    assert error.message == "a bad byte \\u0000 here" and "a bad byte \\u0000 here" in error.traceback


def test_an_event_payload_holding_nul_is_refused_when_emitted_or_published(any_store):
    run = POISON.run({"title": "in an event"}, store=any_store)
    assert run.status is RunStatus.FAILED
    message = run.steps[0].error.message
    assert "payload of event 'test.poison.note' violates contract Note: field 'lines.0.text'" in message
    with pytest.raises(InvalidInput, match="field 'title'"):
        baton.publish("test.poison.note", {"title": "\x00"}, store=any_store)
    with pytest.raises(InvalidInput, match=r"field 'tags\.k'"):  # nobody subscribes: checked all the same
        baton.publish("test.poison.nobody", {"tags": {"k": "\x00"}}, store=any_store)
    assert any_store.events.list() == []


class Facts(BaseModel):
    facts: list[str] = Field(max_length=3)


def _agent(model):
    return Agent("test_poison_agent", instructions="Facts.", input=Note, output=Facts, model=model, reasks=1)


def test_a_model_answer_holding_nul_is_re_asked_then_kept_written_out(any_store):
    fixed = ScriptedModel([{"facts": ["a\x00b"]}, {"facts": ["ab"]}])
    run = Pipeline("test-poison-agent", [_agent(fixed)]).run({"title": "x"}, store=any_store)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"facts": ["ab"]}
    assert "facts.0: the string holds a NUL character" in fixed.requests[1][-1].content
    assert [c.outcome for c in run.steps[0].calls] == ["invalid", "answer"]

    stubborn = ScriptedModel(['{"facts": ["a\x00b"]}'])  # a raw NUL: not even JSON
    run = Pipeline("test-poison-stubborn", [_agent(stubborn)]).run({"title": "x"}, store=any_store)
    assert run.status is RunStatus.FAILED
    error = any_store.runs.get(run.id).steps[0].error
    assert error.type == "ContractViolation" and error.raw_output == '{"facts": ["a\\u0000b"]}'


def test_a_model_error_holding_nul_is_recorded_with_the_call(any_store):
    broken = ScriptedModel([baton.PermanentProviderError("scripted", "a bad byte \x00 in the answer")])
    run = Pipeline("test-poison-provider", [_agent(broken)]).run({"title": "x"}, store=any_store)
    assert run.status is RunStatus.FAILED
    [call] = any_store.runs.get(run.id).steps[0].calls
    assert call.outcome == "error" and "a bad byte \\u0000 in the answer" in call.error


@pytest.fixture
def client(any_store):
    with TestClient(
        create_app(any_store, sweep=False, access=Access.from_setting(TOKEN)),
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as c:
        yield c


def test_the_api_answers_422_naming_the_field_for_a_nul_in_a_run_or_an_event(client, any_store):
    answer = client.post("/runs/test-poison", json={"title": "a\x00"})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["title"]
    answer = client.post("/events/test.poison.note", json={"title": "ok", "lines": [{"text": "\x00"}]})
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["lines.0.text"]
    assert any_store.runs.list() == [] and any_store.events.list() == []


def test_the_cli_refuses_a_nul_in_the_input_in_one_line_with_exit_2(database_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {"BATON_DATABASE_URL": database_url}
    result = baton_cli(env, "run", BILLING, "--input", '{"customer": "A\\u0000da", "amounts": [1]}', check=2)
    assert "field 'customer': the string holds a NUL character" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert json.loads(baton_cli(env, "runs", "--json", check=0).stdout) == []
