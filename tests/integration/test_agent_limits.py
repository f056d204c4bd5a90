"""Rate limits and concurrency caps as agents obey them, on the local runtime: a 429 is waited out within the
limits (every caller holding back), a cap holds across a supervisor's parallel workers, the setting works as
the code does, and a limit kept per key never stores the key."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel

import baton
from baton import Agent, Retry, RunStatus, Supervisor, step
from baton.ratelimits import clear_limits
from baton.store.schema import rate_limits
from tests.integration.fake_servers import ScriptedHTTPServer, error_reply, openai_reply


class Ask(BaseModel):
    text: str


class Said(BaseModel):
    text: str


@pytest.fixture(autouse=True)
def no_limits_before_or_after():
    clear_limits()
    yield
    clear_limits()


def server_env(monkeypatch, server: ScriptedHTTPServer) -> None:
    monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-limits-secret-key")


def speaker(name: str = "speaker") -> Agent:
    return Agent(name, instructions="Say it.", input=Ask, output=Said, model="openai:gpt-4o-mini",
                 retry=Retry(max_attempts=1))  # fmt: skip


def test_a_429_is_waited_out_within_the_limits_and_the_call_made_again_in_the_same_attempt(monkeypatch, store):
    replies = [error_reply(429, "slow down", {"retry-after": "1"}), openai_reply('{"text": "hello"}')]
    with ScriptedHTTPServer(replies) as server:
        server_env(monkeypatch, server)
        baton.limit("openai:gpt-4o-mini", rpm=6000)
        started = time.monotonic()
        run = baton.Pipeline("limits-429", [speaker()]).run({"text": "hi"}, store=store)
        waited = time.monotonic() - started
    assert run.status is RunStatus.SUCCEEDED, run
    # Not a failed attempt retried: one attempt, whose first call the server refused.
    assert run.step("speaker").attempts == 1
    outcomes = [c.outcome for c in run.step("speaker").calls]
    assert outcomes == ["error", "answer"]
    assert "429" in run.step("speaker").calls[0].error
    assert waited >= 1.0  # the Retry-After
    assert len(server.requests) == 2


def test_without_a_limit_a_429_fails_the_attempt_as_before(monkeypatch, store):
    with ScriptedHTTPServer([error_reply(429, "slow down", {"retry-after": "0"})]) as server:
        server_env(monkeypatch, server)
        run = baton.Pipeline("limits-none", [speaker("unlimited")]).run({"text": "hi"}, store=store)
    assert run.status is RunStatus.FAILED
    assert run.step("unlimited").error.type.endswith("TransientProviderError")


class Plan(BaseModel):
    a: Ask | None = None
    b: Ask | None = None
    c: Ask | None = None


class Heard(BaseModel):
    a: Said | None = None
    b: Said | None = None
    c: Said | None = None


@step
def fan(ask: Ask) -> Plan:
    return Plan(a=ask, b=ask, c=ask)


@step
def join(heard: Heard) -> Said:
    return Said(text=" ".join(s.text for s in (heard.a, heard.b, heard.c) if s))


def chorus(name: str) -> Supervisor:
    return Supervisor(name, router=fan, workers={k: speaker(f"voice_{k}") for k in "abc"}, merge=join, max_parallel=3)


@pytest.mark.parametrize("declared", ["code", "setting"])
def test_a_concurrency_cap_holds_across_a_supervisors_parallel_workers(monkeypatch, any_store, declared):
    with ScriptedHTTPServer([openai_reply('{"text": "la"}')], delay=0.2) as server:
        server_env(monkeypatch, server)
        if declared == "code":
            baton.limit("openai:gpt-4o-mini", concurrent=1)
        else:
            monkeypatch.setenv("BATON_LIMITS", "openai:gpt-4o-mini concurrent=1")
        run = chorus(f"limits-chorus-{declared}").run({"text": "hi"}, store=any_store)
    assert run.status is RunStatus.SUCCEEDED, run
    assert run.output == {"text": "la la la"}
    assert len(server.requests) == 3
    assert server.max_in_flight == 1  # without the cap the three overlap (see below)


def test_the_three_workers_do_overlap_without_a_cap(monkeypatch, store):
    with ScriptedHTTPServer([openai_reply('{"text": "la"}')], delay=0.2) as server:
        server_env(monkeypatch, server)
        run = chorus("limits-chorus-free").run({"text": "hi"}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    assert server.max_in_flight > 1


def test_a_limit_kept_per_key_stores_the_keys_fingerprint_never_the_key(monkeypatch, store):
    with ScriptedHTTPServer([openai_reply('{"text": "ok"}')]) as server:
        server_env(monkeypatch, server)
        baton.limit("openai", rpm=600, per_key=True)
        run = baton.Pipeline("limits-key", [speaker("keyed")]).run({"text": "hi"}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    with store.engine.connect() as c:
        names = [r[0] for r in c.execute(rate_limits.select().with_only_columns(rate_limits.c.name))]
    assert names and all("sk-limits-secret-key" not in n for n in names)
    assert any(baton.ratelimits.fingerprint("sk-limits-secret-key") in n for n in names), names
