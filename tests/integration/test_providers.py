"""The providers through their official SDKs against real servers on loopback."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from baton import Agent, PermanentProviderError, Pipeline, Retry, RunStatus, TransientProviderError
from baton.providers import Message
from baton.providers.anthropic import AnthropicProvider
from baton.providers.local import model_path
from baton.providers.openai import OpenAIProvider
from tests.integration.fake_servers import ScriptedHTTPServer, anthropic_reply, error_reply, openai_reply
from tests.parallel import MODEL


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


@MODEL
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


# Async agents: awaited on one event loop, as the async executor runs them.


def ask_many(agent: Agent, count: int) -> list[BaseModel]:
    """`count` calls of `agent`, all awaited at once on one event loop."""

    async def main() -> list[BaseModel]:
        return await asyncio.gather(*(agent.fn(Ticket(text=f"ticket {i}")) for i in range(count)))

    return asyncio.run(main())


def test_async_openai_agents_wait_on_the_server_together(monkeypatch):
    with ScriptedHTTPServer([openai_reply('{"category": "billing", "urgent": true}')], delay=0.3) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        agent = Agent("triage", instructions=INSTRUCTIONS, input=Ticket, output=Triage, model="openai:gpt-4o-mini")
        answers = ask_many(agent, 50)
    assert answers == [Triage(category="billing", urgent=True)] * 50
    assert len(server.requests) == 50
    # One after the other, the server would never hold more than one; on one loop it holds most of them at once.
    assert server.max_in_flight >= 20


def test_async_anthropic_agents_wait_on_the_server_together(monkeypatch):
    with ScriptedHTTPServer([anthropic_reply("Triage", {"category": "bug", "urgent": False})], delay=0.3) as server:
        monkeypatch.setenv("BATON_ANTHROPIC_BASE_URL", server.url)
        model = "anthropic:claude-3-5-haiku-latest"
        agent = Agent("triage", instructions=INSTRUCTIONS, input=Ticket, output=Triage, model=model)
        answers = ask_many(agent, 40)
    assert answers == [Triage(category="bug", urgent=False)] * 40
    assert server.max_in_flight >= 20


async def _acomplete(provider, model: str = "gpt-4o-mini"):
    return await provider.acomplete(
        model,
        [Message("system", INSTRUCTIONS), Message("user", '{"text":"x"}')],
        schema=Triage.model_json_schema(),
        schema_name="Triage",
        tools=[],
        max_tokens=64,
        temperature=0.0,
    )


def _counting_clients(provider) -> list:
    """The async clients `provider` makes from now on, in order."""
    made, make = [], provider._async_clients.make
    provider._async_clients.make = lambda **kw: made.append(make(**kw)) or made[-1]
    return made


def test_each_event_loop_gets_its_own_client_closed_when_the_loop_ends(monkeypatch):
    with ScriptedHTTPServer([openai_reply('{"category": "bug", "urgent": false}')], delay=0.2) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        provider = OpenAIProvider()
        made = _counting_clients(provider)
        first = asyncio.run(_acomplete(provider))
        assert provider._async_clients.loop_count() == 0 and made[0].is_closed()
        second = asyncio.run(_acomplete(provider))
        assert len(made) == 2 and made[1].is_closed()
        # Two loops running at once, on two threads, each with a client of its own.
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda _: asyncio.run(_acomplete(provider)), range(2)))
        assert server.max_in_flight == 2 and len(made) == 4
    assert [c.text for c in (first, second, *both)] == ['{"category": "bug", "urgent": false}'] * 4
    assert provider._async_clients.loop_count() == 0


def test_a_client_of_a_loop_closed_without_shutdown_is_forgotten_at_the_next_call(monkeypatch):
    with ScriptedHTTPServer([openai_reply('{"category": "bug", "urgent": false}')]) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        provider = OpenAIProvider()
        loop = asyncio.new_event_loop()
        loop.run_until_complete(_acomplete(provider))
        loop.close()  # no shutdown_asyncgens: nothing closed the client on its loop
        assert provider._async_clients.loop_count() == 1
        asyncio.run(_acomplete(provider))
    assert provider._async_clients.loop_count() == 0


def test_async_openai_falls_back_to_json_mode_when_the_server_refuses_the_schema(monkeypatch):
    replies = [
        error_reply(400, "response_format of type json_schema is not supported"),
        openai_reply('{"category": "bug", "urgent": true}'),
    ]
    with ScriptedHTTPServer(replies) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        provider = OpenAIProvider()
        completion = asyncio.run(_acomplete(provider))
        asyncio.run(_acomplete(provider))
    assert completion.text == '{"category": "bug", "urgent": true}'
    formats = [r["body"]["response_format"]["type"] for r in server.requests]
    assert formats == ["json_schema", "json_object", "json_object"]  # the server's refusal is remembered


@pytest.mark.parametrize(
    ("reply", "error", "says"),
    [
        (error_reply(429, "slow down", {"retry-after": "7"}), TransientProviderError, "HTTP 429"),
        (error_reply(503, "down"), TransientProviderError, "HTTP 503"),
        (error_reply(404, "no such model"), PermanentProviderError, "unknown model"),
        (error_reply(401, "Incorrect API key provided: sk-live-abcdefghijklmnop"), PermanentProviderError, "API key"),
    ],
)
def test_async_openai_errors_are_classified_and_redacted_as_the_sync_ones(monkeypatch, reply, error, says):
    with ScriptedHTTPServer([reply]) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abcdefghijklmnop")
        with pytest.raises(error) as caught:
            asyncio.run(_acomplete(OpenAIProvider()))
        assert len(server.requests) == 1  # the SDK's own retries are off
    assert says in str(caught.value) and "sk-live-abcdefghijklmnop" not in str(caught.value)
    if reply[0] == 429:
        assert caught.value.retry_after == 7.0


def test_async_anthropic_overload_is_transient_and_a_bad_key_permanent(monkeypatch):
    for reply, error in [(error_reply(529, "overloaded"), TransientProviderError), (error_reply(401, "no"), None)]:
        with ScriptedHTTPServer([reply]) as server:
            monkeypatch.setenv("BATON_ANTHROPIC_BASE_URL", server.url)
            with pytest.raises(error or PermanentProviderError, match=f"HTTP {reply[0]}"):
                asyncio.run(_acomplete(AnthropicProvider(), "claude-3-5-haiku-latest"))


def test_async_tools_go_round_trip_through_the_async_sdk(monkeypatch):
    async def lookup_plan(email: str) -> dict:
        """The plan of a customer's account."""
        await asyncio.sleep(0)
        return {"email": email, "plan": "pro"}

    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup_plan", "arguments": '{"email": "ada@example.org"}'},
    }
    asks_tool = openai_reply("")
    asks_tool[2]["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
    replies = [asks_tool, openai_reply('{"category": "billing", "urgent": false}')]
    with ScriptedHTTPServer(replies) as server:
        monkeypatch.setenv("BATON_OPENAI_BASE_URL", server.url + "/v1")
        agent = Agent(
            "triage", instructions=INSTRUCTIONS, input=Ticket, output=Triage, model="openai:gpt-4o-mini",
            tools=[lookup_plan, lookup_account],
        )  # fmt: skip
        (answer,) = ask_many(agent, 1)
    assert answer == Triage(category="billing", urgent=False)
    assert server.requests[1]["body"]["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"email":"ada@example.org","plan":"pro"}',
    }
