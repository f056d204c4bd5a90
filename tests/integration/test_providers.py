"""The providers through their official SDKs against real servers on loopback."""

from __future__ import annotations

import os
import time
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from baton import Agent, Pipeline, Retry, RunStatus
from baton.providers.local import model_path
from tests.integration.fake_servers import ScriptedHTTPServer, anthropic_reply, error_reply, openai_reply


class Ticket(BaseModel):
    text: str = Field(max_length=500)


class Triage(BaseModel):
    category: Literal["billing", "bug", "other"]
    urgent: bool


INSTRUCTIONS = "Classify the support ticket. Reply with JSON only."


def triage(model: str, **kw) -> Pipeline:
    agent = Agent("triage", instructions=INSTRUCTIONS, input=Ticket, output=Triage, model=model, **kw)
    return Pipeline(f"triage-{model.replace(':', '-')}", [agent])


def test_openai_provider_against_a_real_openai_compatible_server(llama_server, monkeypatch, store):
    monkeypatch.setenv("BATON_OPENAI_BASE_URL", llama_server)
    run = triage("openai:smollm2").run({"text": "I was charged twice for my subscription."}, store=store)
    assert run.status is RunStatus.SUCCEEDED, run.steps[0].error
    assert Triage.model_validate(run.output)
    (call, *_) = run.step("triage").calls
    assert call.provider == "openai" and call.input_tokens > 10 and call.output_tokens > 0
    assert run.tokens.input >= call.input_tokens


def test_openai_provider_sends_structured_output_and_reads_usage(monkeypatch, store):
    with ScriptedHTTPServer([openai_reply('{"category": "billing", "urgent": true}')]) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-key")
        run = triage("openai:gpt-4o-mini").run({"text": "charged twice"}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"category": "billing", "urgent": True}
    body = server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == Triage.model_json_schema()
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == '{"text":"charged twice"}'
    call = run.step("triage").calls[0]
    assert (call.input_tokens, call.output_tokens) == (21, 7)
    assert call.cost_usd == pytest.approx((21 * 0.15 + 7 * 0.60) / 1_000_000)
    assert "sk-test-secret-key" not in str(store.runs.get(run.id).to_json_dict())


def test_a_429_is_retried_after_the_servers_retry_after(monkeypatch, store):
    replies = [
        error_reply(429, "slow down", {"retry-after": "0.3"}),
        openai_reply('{"category": "bug", "urgent": false}'),
    ]
    with ScriptedHTTPServer(replies) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        policy = Retry(max_attempts=3, backoff=0.01, max_delay=5, jitter=False)
        started = time.monotonic()
        run = triage("openai:gpt-4o-mini", retry=policy).run({"text": "crash"}, store=store)
        waited = time.monotonic() - started
    assert run.status is RunStatus.SUCCEEDED
    assert run.step("triage").attempts == 2 and waited >= 0.3
    assert run.step("triage").attempt_errors[0].error.type == "TransientProviderError"


@pytest.mark.parametrize(("status", "says"), [(401, "API key"), (404, "unknown model"), (400, "bad request")])
def test_permanent_errors_fail_at_once_and_say_which(monkeypatch, store, status, says):
    with ScriptedHTTPServer([error_reply(status, "nope")]) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        run = triage("openai:gpt-4o-mini").run({"text": "x"}, store=store)
        assert len(server.requests) == 1
    error = run.step("triage").error
    assert run.status is RunStatus.FAILED and error.type == "PermanentProviderError"
    assert f"HTTP {status}" in error.message and says in error.message


def test_anthropic_provider_enforces_the_contract_as_a_tool(monkeypatch, store):
    with ScriptedHTTPServer([anthropic_reply("Triage", {"category": "other", "urgent": False})]) as server:
        monkeypatch.setenv("BATON_ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        run = triage("anthropic:claude-3-5-haiku-latest").run({"text": "hello"}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"category": "other", "urgent": False}
    request = server.requests[0]
    assert request["path"] == "/v1/messages"
    body = request["body"]
    assert body["system"] == INSTRUCTIONS
    assert body["tool_choice"] == {"type": "tool", "name": "Triage"}
    assert body["tools"][0]["input_schema"] == Triage.model_json_schema()
    assert body["messages"] == [{"role": "user", "content": '{"text":"hello"}'}]
    call = run.step("triage").calls[0]
    assert (call.provider, call.input_tokens, call.output_tokens) == ("anthropic", 30, 12)


def test_anthropic_overload_is_transient(monkeypatch, store):
    replies = [error_reply(529, "overloaded"), anthropic_reply("Triage", {"category": "bug", "urgent": True})]
    with ScriptedHTTPServer(replies) as server:
        monkeypatch.setenv("BATON_ANTHROPIC_BASE_URL", server.url)
        policy = Retry(max_attempts=2, backoff=0.01, jitter=False)
        run = triage("anthropic:claude-3-5-haiku-latest", retry=policy).run({"text": "x"}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.step("triage").attempts == 2


def test_the_local_provider_end_to_end(store):
    run = triage("local", max_tokens=30).run({"text": "The app crashes when I upload a photo."}, store=store)
    assert run.status is RunStatus.SUCCEEDED, run.steps[0].error
    assert Triage.model_validate(run.output)
    call = run.step("triage").calls[0]
    assert call.provider == "local" and call.input_tokens > 10 and call.cost_usd == 0.0


def test_the_embedded_model_ships_in_a_package():
    assert os.path.getsize(model_path()) > 50_000_000


def lookup_account(email: str) -> dict:
    """Find a customer's account by e-mail."""
    return {"email": email, "plan": "pro", "open_invoices": 2}


def test_openai_tool_calls_go_round_trip_through_the_sdk(monkeypatch, store):
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_account", "arguments": '{"email": "ada@example.org"}'},
    }
    asks_tool = openai_reply("")
    asks_tool[2]["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
    replies = [asks_tool, openai_reply('{"category": "billing", "urgent": false}')]
    with ScriptedHTTPServer(replies) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        run = triage("openai:gpt-4o-mini", tools=[lookup_account]).run({"text": "invoice?"}, store=store)
    assert run.status is RunStatus.SUCCEEDED, run.steps[0].error
    first, second = (r["body"] for r in server.requests)
    assert first["tools"][0]["function"]["name"] == "lookup_account"
    assert first["tools"][0]["function"]["parameters"]["properties"]["email"]["type"] == "string"
    assert second["messages"][2]["tool_calls"][0]["id"] == "call_1"
    assert second["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"email":"ada@example.org","plan":"pro","open_invoices":2}',
    }


def test_anthropic_tool_calls_go_round_trip_through_the_sdk(monkeypatch, store):
    replies = [
        anthropic_reply("lookup_account", {"email": "ada@example.org"}),
        anthropic_reply("Triage", {"category": "billing", "urgent": True}),
    ]
    with ScriptedHTTPServer(replies) as server:
        monkeypatch.setenv("BATON_ANTHROPIC_BASE_URL", server.url)
        agent_pipeline = triage("anthropic:claude-3-5-haiku-latest", tools=[lookup_account])
        run = agent_pipeline.run({"text": "invoice?"}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"category": "billing", "urgent": True}
    first, second = (r["body"] for r in server.requests)
    assert [t["name"] for t in first["tools"]] == ["Triage", "lookup_account"]
    assert first["tool_choice"] == {"type": "any"}
    assert second["messages"][1]["content"][0]["type"] == "tool_use"
    assert second["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": '{"email":"ada@example.org","plan":"pro","open_invoices":2}',
    }


def test_an_api_key_echoed_by_a_server_never_reaches_the_store(monkeypatch, store):
    secret = "sk-live-abcdefghijklmnop"
    with ScriptedHTTPServer([error_reply(401, f"Incorrect API key provided: {secret}")]) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        run = triage("openai:gpt-4o-mini").run({"text": "x"}, store=store)
        headers = {k.lower(): v for k, v in server.requests[0]["headers"].items()}
        assert headers["authorization"] == f"Bearer {secret}"
    stored = str(store.runs.get(run.id).to_json_dict())
    assert run.status is RunStatus.FAILED and "HTTP 401" in stored
    assert secret not in stored and "[redacted]" in stored


def test_an_anthropic_answer_without_the_tool_is_re_asked_with_its_words(monkeypatch, store):
    prose = (200, {}, {**anthropic_reply("Triage", {})[2], "content": [{"type": "text", "text": "It is a bug."}]})
    replies = [prose, anthropic_reply("Triage", {"category": "bug", "urgent": False})]
    with ScriptedHTTPServer(replies) as server:
        monkeypatch.setenv("BATON_ANTHROPIC_BASE_URL", server.url)
        run = triage("anthropic:claude-3-5-haiku-latest").run({"text": "crash"}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"category": "bug", "urgent": False}
    reask = server.requests[1]["body"]["messages"]
    assert reask[1] == {"role": "assistant", "content": "It is a bug."}
    assert [c.outcome for c in run.step("triage").calls] == ["invalid", "answer"]
