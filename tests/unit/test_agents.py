"""Agents with a scripted model: the prompt, re-asks, tools, usage and the errors a person reads."""

import asyncio
import inspect
import json
import threading

import pytest
from pydantic import BaseModel, Field

from baton import (
    Agent,
    ContractViolation,
    DefinitionError,
    PermanentProviderError,
    Pipeline,
    Retry,
    RunStatus,
    ScriptedModel,
    Tool,
    TransientProviderError,
    register_price,
)
from baton import step as baton_step
from baton._context import StepContext, current_step, enter, leave
from baton.providers import Completion


class Doc(BaseModel):
    text: str = Field(max_length=2000)


class Facts(BaseModel):
    key_facts: list[str] = Field(max_length=3)
    confidence: float = Field(ge=0, le=1)


GOOD = {"key_facts": ["revenue rose 12%"], "confidence": 0.9}
TOO_MANY = {"key_facts": ["a", "b", "c", "d"], "confidence": 0.9}


def agent(model, **kw):
    return Agent("extract", instructions="Extract the key facts.", input=Doc, output=Facts, model=model, **kw)


def test_the_prompt_is_the_instructions_then_the_input_as_compact_json(store):
    model = ScriptedModel([GOOD])
    run = Pipeline("prompt", [agent(model)]).run({"text": "Revenue rose 12%."}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    system, user = model.requests[0]
    assert (system.role, system.content) == ("system", "Extract the key facts.")
    assert (user.role, user.content) == ("user", '{"text":"Revenue rose 12%."}')
    assert model.schemas[0] == Facts.model_json_schema()


def test_an_invalid_answer_is_re_asked_with_the_errors(store):
    model = ScriptedModel([TOO_MANY, GOOD])
    run = Pipeline("reask", [agent(model, reasks=2)]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.output == GOOD
    reask = model.requests[1]
    assert reask[-2].role == "assistant" and json.loads(reask[-2].content) == TOO_MANY
    assert "key_facts" in reask[-1].content and "at most 3 items" in reask[-1].content
    calls = run.step("extract").calls
    assert [c.outcome for c in calls] == ["invalid", "answer"]


def test_after_the_last_re_ask_the_step_fails_keeping_the_raw_answer(store):
    model = ScriptedModel([TOO_MANY])
    run = Pipeline("gives-up", [agent(model, reasks=1)]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.FAILED
    error = run.step("extract").error
    assert error.type == "ContractViolation"
    assert "step 'extract'" in error.message and "Facts" in error.message and "key_facts" in error.message
    assert json.loads(error.raw_output) == TOO_MANY
    assert error.validation_errors[0]["field"] == "key_facts"
    assert len(model.requests) == 2  # the first answer and one re-ask; a bad answer is not a transient error


def test_every_call_is_recorded_with_usage_and_cost_summed_per_step_and_run(store):
    register_price("scripted:priced", 1_000_000, 2_000_000)  # $1 per input token, $2 per output token
    model = ScriptedModel([TOO_MANY, GOOD], model="priced")
    run = Pipeline("usage", [agent(model)]).run({"text": "Revenue rose."}, store=store)
    record = run.step("extract")
    assert len(record.calls) == 2
    assert record.tokens.input == sum(c.input_tokens for c in record.calls) > 0
    assert record.tokens.output == sum(c.output_tokens for c in record.calls) > 0
    assert record.cost_usd == pytest.approx(record.tokens.input * 1 + record.tokens.output * 2)
    assert (run.tokens, run.cost_usd) == (record.tokens, pytest.approx(record.cost_usd))
    assert record.boundary_tokens and record.boundary_tokens > 0
    shown = store.runs.get(run.id).to_json_dict()
    assert shown["tokens"] == {"input": record.tokens.input, "output": record.tokens.output}
    assert [c["outcome"] for c in shown["steps"][0]["calls"]] == ["invalid", "answer"]


def test_the_model_can_call_the_agents_tools(store):
    def revenue(year: int) -> dict:
        """Revenue of a year, in millions."""
        return {"year": year, "revenue": 48.2}

    from baton.providers import ToolCall

    model = ScriptedModel([[ToolCall("c1", "revenue", {"year": 2024})], GOOD])
    run = Pipeline("tools", [agent(model, tools=[revenue])]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    second = model.requests[1]
    assert second[-1].role == "tool" and json.loads(second[-1].content) == {"year": 2024, "revenue": 48.2}
    assert [c.outcome for c in run.step("extract").calls] == ["tool_calls", "answer"]


def test_transient_provider_errors_retry_and_honour_retry_after(store, monkeypatch):
    slept = []
    monkeypatch.setattr("baton.runtime.executor.pause", slept.append)
    model = ScriptedModel([TransientProviderError("scripted", "busy", status=429, retry_after=7.0), GOOD])
    policy = Retry(max_attempts=3, backoff=0.01, max_delay=1, jitter=False)
    run = Pipeline("retry-after", [agent(model, retry=policy)]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    assert slept == [7.0]
    assert run.step("extract").attempts == 2


def test_permanent_provider_errors_fail_at_once_and_say_which(store):
    model = ScriptedModel([PermanentProviderError("scripted", "the API key is missing or wrong", status=401), GOOD])
    run = Pipeline("permanent", [agent(model)]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.FAILED
    assert "HTTP 401" in run.step("extract").error.message
    assert len(model.requests) == 1


def test_an_unknown_model_fails_at_definition_listing_the_valid_ones():
    with pytest.raises(DefinitionError, match="valid providers: anthropic, local, openai"):
        agent("gpt4all:whatever")


def test_the_default_model_comes_from_baton_model(monkeypatch):
    monkeypatch.setenv("BATON_MODEL", "openai:gpt-4o-mini")
    assert agent(None).model == "openai:gpt-4o-mini"


def test_contract_violation_keeps_the_raw_answer_across_processes():
    import pickle

    err = ContractViolation(contract="C", errors=[], step="s", where="w", raw_output="{bad")
    assert pickle.loads(pickle.dumps(err)).raw_output == "{bad"


def test_an_agents_tool_list_stays_short_and_needs_a_model_that_calls_tools():
    def make_tool(i):
        def tool(x: int) -> int:
            return x

        tool.__name__ = f"tool{i}"
        return tool

    with pytest.raises(DefinitionError, match="at most 10"):
        agent(ScriptedModel([GOOD]), tools=[make_tool(i) for i in range(11)])
    with pytest.raises(DefinitionError, match="cannot call tools"):
        agent("local", tools=[make_tool(0)])


def test_a_model_without_a_known_price_makes_the_cost_unknown_not_free(store):
    model = ScriptedModel([GOOD], model="unpriced-model")
    model.name = "mystery"
    run = Pipeline("unpriced", [agent(model)]).run({"text": "x"}, store=store)
    assert run.step("extract").calls[0].cost_usd is None
    assert run.step("extract").cost_usd is None and run.cost_usd is None
    assert store.runs.get(run.id).to_json_dict()["cost_usd"] is None


def test_each_model_call_is_stored_as_soon_as_it_returns(store):
    seen = []

    def count_stored_calls(probe: str) -> int:
        """How many model calls the store holds for the running run."""
        (running,) = store.runs.list(status="running")
        seen.append(len(store.runs.get(running.id).step("extract").calls))
        return seen[-1]

    from baton.providers import ToolCall

    model = ScriptedModel([[ToolCall("c1", "count_stored_calls", {"probe": "now"})], GOOD])
    run = Pipeline("stored-at-once", [agent(model, tools=[count_stored_calls])]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    assert seen == [1]  # the call that asked for the tool was in the store before the tool ran


# The agent's work is async: awaited on an event loop, as the async executor runs it.


def test_an_agents_work_is_a_coroutine_function_so_the_executor_awaits_it():
    assert inspect.iscoroutinefunction(agent(ScriptedModel([GOOD])).fn)


def test_an_async_agent_records_its_calls_through_akeep_without_the_sync_writer():
    def sync_writer(call):
        raise AssertionError("async code wrote a call through the blocking writer")

    written = []

    async def writer(calls):
        written.extend(c.outcome for c in calls)

    from baton.providers import ToolCall

    model = ScriptedModel([[ToolCall("c1", "echo", {"text": "hi"})], TOO_MANY, GOOD])

    def echo(text: str) -> str:
        """Say it back."""
        return text

    ctx = StepContext("run", "extract", 0, 1, record=sync_writer, arecord=writer)

    async def main():
        token = enter(ctx)
        try:
            return await agent(model, tools=[echo]).fn(Doc(text="x"))
        finally:
            leave(token)

    assert asyncio.run(main()) == Facts(**GOOD)
    # Each call is written before the tools run or the next call is made; the last, with the checkpoint.
    assert written == ["tool_calls", "invalid"]
    assert [c.outcome for c in ctx.unwritten] == ["answer"]


def test_async_tools_are_awaited_on_the_loop_and_plain_ones_run_on_a_thread_in_the_step(store):
    seen = {}

    async def loop_thread(probe: str) -> str:
        """Where the agent's loop runs."""
        await asyncio.sleep(0)
        seen["loop"] = threading.get_ident()
        return "async"

    def plain(probe: str) -> str:
        """Where a plain tool runs, and which step it sees."""
        seen["plain"] = threading.get_ident()
        seen["step"] = current_step().step
        return "plain"

    from baton.providers import ToolCall

    calls = [ToolCall("c1", "loop_thread", {"probe": "a"}), ToolCall("c2", "plain", {"probe": "b"})]
    model = ScriptedModel([calls, GOOD])
    run = Pipeline("async-tools", [agent(model, tools=[loop_thread, plain])]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.SUCCEEDED, run.step("extract").error
    assert [(m.role, m.content) for m in model.requests[1][-2:]] == [("tool", '"async"'), ("tool", '"plain"')]
    assert seen["plain"] != seen["loop"] and seen["step"] == "extract"


def test_a_tool_can_be_async_and_still_called_from_sync_code():
    async def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    tool = Tool(double)
    assert tool.is_async and tool.call({"x": 21}) == "42"
    assert asyncio.run(tool.acall({"x": "nope"})).startswith('{"error": "invalid arguments')


class SyncOnly:
    """A provider written before agents were async: `complete` alone, and it blocks."""

    name = "sync-only"
    model = "blocking"

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties)
        self.threads = set()

    def complete(self, model, messages, *, schema, schema_name, tools, max_tokens, temperature):
        self.threads.add(threading.get_ident())
        # Every call waits for the others: on the loop's thread they would come one at a time and never meet.
        self.barrier.wait(timeout=10)
        return Completion(json.dumps(GOOD), 5, 5, model)


def test_a_provider_with_only_sync_complete_runs_on_threads_off_the_loop(store):
    provider = SyncOnly(parties=3)
    extract = agent(provider)

    async def main():
        return threading.get_ident(), await asyncio.gather(*(extract.fn(Doc(text=str(i))) for i in range(3)))

    loop_thread, answers = asyncio.run(main())
    assert answers == [Facts(**GOOD)] * 3
    assert loop_thread not in provider.threads and len(provider.threads) == 3
    provider.barrier = threading.Barrier(1)
    assert Pipeline("sync-only", [extract]).run({"text": "x"}, store=store).output == GOOD


def test_a_provider_object_needs_complete_or_acomplete():
    with pytest.raises(DefinitionError, match="acomplete or complete"):
        agent(object())


# A step's calls are written with its checkpoint, or on the way to the next call: never twice, never lost.


class SlowModel(ScriptedModel):
    """Answers after a pause, on the loop, so that agents in one step are in flight together."""

    async def acomplete(self, *args, **kwargs):
        await asyncio.sleep(0.05)
        return await super().acomplete(*args, **kwargs)


def test_agents_side_by_side_in_one_step_have_each_call_written_once(store):
    agents = [
        Agent(f"side{i}", instructions="Extract.", input=Doc, output=Facts, model=SlowModel([GOOD] * 40))
        for i in range(4)
    ]

    @baton_step
    async def together(doc: Doc) -> Facts:
        # Two rounds, so that a flush before a call meets another agent's calls kept meanwhile.
        for _ in range(2):
            await asyncio.gather(*(a.fn(doc) for a in agents))
        return Facts(**GOOD)

    flow = Pipeline("side-by-side", [together])
    runs = [flow.run({"text": f"doc {i}"}, store=store) for i in range(5)]
    assert [len(store.runs.get(r.id).step("together").calls) for r in runs] == [8] * 5


def test_a_cancelled_run_keeps_the_model_call_it_made(store):
    @baton_step(name="extract")  # the agent's own name: its calls are the step's, written at its end
    async def ask_then_wait(doc: Doc) -> Facts:
        facts = await agent(ScriptedModel([GOOD])).fn(doc)
        await asyncio.sleep(30)  # cancelled here, after the call, before any checkpoint
        return facts

    flow = Pipeline("cancelled-after-a-call", [ask_then_wait])

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(flow.arun({"text": "x"}, store=store), 1.0)

    asyncio.run(main())
    (run,) = store.runs.list(pipeline="cancelled-after-a-call")
    run = store.runs.get(run.id)
    assert run.status is RunStatus.INTERRUPTED
    assert [c.outcome for c in run.step("extract").calls] == ["answer"]


class Picked(BaseModel):
    """What a picking model answers: the numbers of the input's lines that hold key facts."""

    lines: list[int] = Field(min_length=1, max_length=3)
    confidence: float = Field(ge=0, le=1)


class LinePicker(Agent):
    def finish(self, answer: Picked, value: Doc) -> Facts:
        lines = value.text.splitlines()
        return Facts(key_facts=[lines[n - 1] for n in answer.lines], confidence=answer.confidence)


def picker(model, **kw):
    return LinePicker("extract", instructions="Pick.", input=Doc, output=Facts, answer=Picked, model=model, **kw)


def test_an_agent_with_its_own_answer_contract_hands_on_what_finish_builds_from_it_and_the_input(store):
    model = ScriptedModel([{"lines": [2], "confidence": 0.5}])
    run = Pipeline("picks", [picker(model)]).run({"text": "Hello.\nRevenue rose 12%."}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"key_facts": ["Revenue rose 12%."], "confidence": 0.5}
    assert model.schemas[0] == Picked.model_json_schema()  # the model is asked for its answer, not the output


def test_an_answer_that_breaks_its_own_contract_is_re_asked_then_fails_naming_it(store):
    model = ScriptedModel([{"lines": [], "confidence": 0.5}, {"lines": [1, 2, 3, 4], "confidence": 0.5}])
    run = Pipeline("picks", [picker(model, reasks=1)]).run({"text": "Hello."}, store=store)
    assert "Picked contract" in model.requests[1][-1].content
    error = run.step("extract").error
    assert run.status is RunStatus.FAILED and "contract Picked" in error.message
    assert json.loads(error.raw_output) == {"lines": [1, 2, 3, 4], "confidence": 0.5}


def test_what_finish_raises_fails_the_step_keeping_the_models_answer(store):
    # Line 5 of a one-line input: the answer's contract did not bound it, so `finish` fails on it.
    run = Pipeline("picks", [picker(ScriptedModel([{"lines": [5], "confidence": 0.5}]))]).run(
        {"text": "Hello."}, store=store
    )
    error = run.step("extract").error
    assert run.status is RunStatus.FAILED and error.type == "IndexError"
    assert json.loads(error.raw_output) == {"lines": [5], "confidence": 0.5}


class AsyncLinePicker(Agent):
    async def finish(self, answer: Picked, value: Doc) -> Facts:
        await asyncio.sleep(0)
        return Facts(key_facts=[value.text.splitlines()[n - 1] for n in answer.lines], confidence=answer.confidence)


def test_finish_may_be_async(store):
    agent = AsyncLinePicker(
        "extract", instructions="Pick.", input=Doc, output=Facts, answer=Picked,
        model=ScriptedModel([{"lines": [1], "confidence": 0.5}]),
    )  # fmt: skip
    run = Pipeline("async-picks", [agent]).run({"text": "Revenue rose 12%."}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.output["key_facts"] == ["Revenue rose 12%."]


def test_an_answer_contract_apart_from_the_output_needs_finish_at_definition():
    with pytest.raises(DefinitionError, match="override finish"):
        Agent("extract", instructions="Pick.", input=Doc, output=Facts, answer=Picked, model=ScriptedModel([GOOD]))
    with pytest.raises(DefinitionError, match="answer= must be a Pydantic model"):
        LinePicker("extract", instructions="Pick.", input=Doc, output=Facts, answer=dict, model=ScriptedModel([GOOD]))
