"""Step timeouts on the local runtime: an attempt past its timeout fails with StepTimeout, is retried, and
what it produces late is never checkpointed; its abandoned work may make no model call and no effect."""

import asyncio
import threading
import time

import pytest
from pydantic import BaseModel

import baton
from baton import Agent, DefinitionError, Pipeline, Retry, RunStatus, ScriptedModel, StepTimeout, step


class N(BaseModel):
    n: int


def test_a_timeout_that_is_not_a_number_of_seconds_above_zero_is_refused_when_declared():
    for bad in (0, -1, float("inf"), "5", True):
        with pytest.raises(DefinitionError, match="timeout="):

            @step(timeout=bad)
            def f(x: N) -> N:
                return x

    with pytest.raises(DefinitionError, match=r"agent_t.*timeout=0"):
        Agent("agent_t", instructions="x", input=N, output=N, model=ScriptedModel([{"n": 1}]), timeout=0)


def test_a_sync_step_past_its_timeout_is_retried_and_its_late_result_is_never_checkpointed(store):
    attempts: list[int] = []
    late = threading.Event()

    @step(timeout=0.3, retry=Retry(max_attempts=3, backoff=0.0))
    def slow(x: N) -> N:
        attempts.append(len(attempts) + 1)
        mine = len(attempts)
        if mine < 3:
            time.sleep(0.8)
            late.set()
            return N(n=100 + mine)  # too late: thrown away
        return N(n=x.n + 1)

    run = Pipeline("timeouts-sync", [slow]).run({"n": 1}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"n": 2}
    assert run.step("slow").attempts == 3
    errors = [a.error for a in run.step("slow").attempt_errors]
    assert [e.type for e in errors] == ["StepTimeout", "StepTimeout"]
    assert "ran past its timeout of 0.3 s" in errors[0].message
    assert late.wait(2.0)  # the abandoned threads did finish...
    time.sleep(0.1)
    assert store.runs.get(run.id).output == {"n": 2}  # ...and what they returned went nowhere


def test_an_async_step_past_its_timeout_is_cancelled_and_the_run_fails_when_its_retries_run_out(store):
    cancelled = []

    @step(timeout=0.2, retry=Retry(max_attempts=2, backoff=0.0))
    async def hangs(x: N) -> N:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return x

    started = time.monotonic()
    run = Pipeline("timeouts-async", [hangs]).run({"n": 1}, store=store)
    assert time.monotonic() - started < 10
    assert run.status is RunStatus.FAILED and run.failed_step == "hangs"
    assert run.step("hangs").error.type == "StepTimeout"
    assert run.step("hangs").attempts == 2
    deadline = time.monotonic() + 2
    while len(cancelled) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(cancelled) == 2  # each attempt's work was cancelled, not left running


def test_a_timeout_during_a_retry_counts_as_one_more_transient_failure(store):
    seen: list[str] = []

    @step(timeout=0.3, retry=Retry(max_attempts=3, backoff=0.0))
    def flaky(x: N) -> N:
        seen.append("go")
        if len(seen) == 1:
            raise baton.TransientError("the API blinked")
        if len(seen) == 2:
            time.sleep(1.0)
        return N(n=len(seen))

    run = Pipeline("timeouts-retry", [flaky]).run({"n": 0}, store=store)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"n": 3}
    kinds = [a.error.type for a in run.step("flaky").attempt_errors]
    assert kinds == ["TransientError", "StepTimeout"]


def test_timeouts_hold_for_runs_on_a_shared_loop(store):
    @step(timeout=0.2, retry=Retry(max_attempts=1))
    def sync_slow(x: N) -> N:
        time.sleep(2)
        return x

    @step(timeout=0.2, retry=Retry(max_attempts=1))
    async def async_slow(x: N) -> N:
        await asyncio.sleep(2)
        return x

    async def both():
        return await asyncio.gather(
            Pipeline("timeouts-loop-sync", [sync_slow]).arun({"n": 1}, store=store),
            Pipeline("timeouts-loop-async", [async_slow]).arun({"n": 1}, store=store),
        )

    runs = asyncio.run(both())
    for run in runs:
        assert run.status is RunStatus.FAILED
        assert run.steps[0].error.type == "StepTimeout"


def test_an_abandoned_attempt_makes_no_model_call_and_no_effect(store):
    model = ScriptedModel([{"n": 7}])
    agent = Agent("late_agent", instructions="x", input=N, output=N, model=model)
    outcome: dict[str, BaseException] = {}
    done = threading.Event()

    @step(timeout=0.2, retry=Retry(max_attempts=1), side_effect=True)
    def slow_then_acts(x: N) -> N:
        time.sleep(0.5)  # the attempt has failed by now
        for name, act in (("call", lambda: agent(x)), ("effect", lambda: baton.effect("mail", lambda: None))):
            try:
                act()
            except BaseException as exc:
                outcome[name] = exc
        done.set()
        return x

    run = Pipeline("timeouts-fenced", [slow_then_acts]).run({"n": 1}, store=store)
    assert run.status is RunStatus.FAILED
    assert done.wait(3)
    assert isinstance(outcome["call"], StepTimeout)
    assert isinstance(outcome["effect"], StepTimeout)
    assert model.requests == []  # no model call was made
    assert store.effects.list(run.id) == []


def test_an_agent_past_its_timeout_fails_with_step_timeout(store):
    def slow(messages):
        time.sleep(1.0)
        return {"n": 1}

    agent = Agent(
        "slow_agent", instructions="x", input=N, output=N, model=ScriptedModel([slow]), timeout=0.2,
        retry=Retry(max_attempts=1),
    )  # fmt: skip
    run = Pipeline("timeouts-agent", [agent]).run({"n": 1}, store=store)
    assert run.status is RunStatus.FAILED
    assert run.step("slow_agent").error.type == "StepTimeout"
