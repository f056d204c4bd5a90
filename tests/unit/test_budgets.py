"""Budgets on model spend, on the local runtime: held before every call, refused past the limit with no call
made, resumed with a larger one; a chain's budget shared by the runs its events start."""

import asyncio

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import baton
from baton import Agent, Budget, BudgetExceeded, DefinitionError, Pipeline, RunStatus, ScriptedModel, Supervisor
from baton.cli import main
from baton.providers import Completion


class Q(BaseModel):
    text: str


class A(BaseModel):
    text: str


def agents(model, *names, max_tokens=100):
    return [Agent(n, instructions="answer", input=Q if i == 0 else A, output=A, model=model, max_tokens=max_tokens)
            for i, n in enumerate(names)]  # fmt: skip


def test_a_budget_that_is_not_positive_is_refused_when_declared():
    for bad in ({"tokens": 0}, {"tokens": -5}, {"usd": -0.5}, {"usd": float("nan")}, {}, {"tokens": 1.5}):
        with pytest.raises(DefinitionError, match="Budget"):
            Budget(**bad)
    with pytest.raises(DefinitionError, match=r"budget= takes a baton\.Budget"):
        Pipeline("bad-budget", agents(ScriptedModel([{"text": "x"}]), "one"), budget={"usd": 1})


def test_a_run_stops_before_the_call_that_would_pass_its_budget_and_resumes_with_a_larger_one(store):
    model = ScriptedModel([{"text": "ok"}])
    pipeline = Pipeline("budget-tokens", agents(model, "first", "second", "third"), budget=Budget(tokens=150))
    run = pipeline.run({"text": "hello"}, store=store)
    # The first call holds its prompt and its 100 tokens of answer (about 145); the second would need as much
    # again on top of what the first spent.
    assert run.status is RunStatus.FAILED and run.failed_step == "second"
    error = run.step("second").error
    assert error.type == "BudgetExceeded"
    assert "budget of 150 tokens" in error.message and "no call was made" in error.message
    assert len(model.requests) == 1
    [spent] = store.budgets.for_run(run.id)
    assert spent.spent_tokens == run.tokens.input + run.tokens.output
    assert spent.held_tokens == 0

    shown = CliRunner().invoke(main, ["show", run.id, "--database-url", store.url], terminal_width=200)
    assert f"{spent.spent_tokens:,} of 150 tokens" in shown.output, shown.output
    as_json = CliRunner().invoke(main, ["show", run.id, "--database-url", store.url, "--json"])
    assert '"budgets"' in as_json.output and '"spent_tokens": ' + str(spent.spent_tokens) in as_json.output

    resumed = baton.resume(run.id, store=store, budget=Budget(tokens=10_000))
    assert resumed.status is RunStatus.SUCCEEDED
    assert len(model.requests) == 3  # the first agent was not asked again
    [after] = store.budgets.for_run(run.id)
    assert after.tokens == 10_000 and after.spent_tokens == resumed.tokens.input + resumed.tokens.output


def test_a_budget_in_dollars_counts_the_price_of_each_call(store):
    baton.register_price("scripted:priced", 1000.0, 1000.0)  # $0.001 a token, both ways
    model = ScriptedModel([{"text": "ok"}], model="priced")
    pipeline = Pipeline("budget-usd", agents(model, "one", "two", max_tokens=30))
    run = pipeline.run({"text": "hi"}, store=store, budget=Budget(usd=0.08))
    assert run.status is RunStatus.FAILED and run.failed_step == "two"
    assert "budget of $0.08" in run.step("two").error.message
    [spent] = store.budgets.for_run(run.id)
    assert spent.spent_usd == pytest.approx(run.cost_usd)


def test_a_budget_in_dollars_on_a_model_with_no_price_fails_rather_than_going_unchecked(store):
    model = ScriptedModel([{"text": "ok"}])
    model.name = "unpriced"  # a provider with no price in the table
    run = Pipeline("budget-unpriced", agents(model, "one")).run({"text": "hi"}, store=store, budget=Budget(usd=1))
    assert run.status is RunStatus.FAILED
    assert "no price is known" in run.step("one").error.message
    assert model.requests == []


class Spender:
    """A provider whose every answer spends 40 tokens in and 100 out, the most its agents allow."""

    name = "spender"
    model = "big"

    def __init__(self) -> None:
        self.calls = 0

    async def acomplete(self, model, messages, **options):
        self.calls += 1
        await asyncio.sleep(0.05)  # calls in flight side by side
        return Completion('{"text": "found"}', 40, options["max_tokens"], model)


def test_no_parallel_worker_starts_a_call_once_the_budget_is_reached(any_store):
    model = Spender()

    class Plan(BaseModel):
        a: Q | None = None
        b: Q | None = None
        c: Q | None = None
        d: Q | None = None

    class Found(BaseModel):
        a: A | None = None
        b: A | None = None
        c: A | None = None
        d: A | None = None

    @baton.step
    def route(x: Q) -> Plan:
        return Plan(a=x, b=x, c=x, d=x)

    workers = {k: Agent(f"w_{k}", instructions="find", input=Q, output=A, model=model, max_tokens=100) for k in "abcd"}

    @baton.step
    def merge(found: Found) -> A:
        return A(text=",".join(v.text for v in found.model_dump().values() if v))

    # Each worker's call holds its prompt and 100 tokens (about 145) and spends 140: two fit in 300, a third
    # does not, whatever the order in which they hold and settle.
    supervisor = Supervisor(
        "budget-fanout", router=route, workers=workers, merge=merge, budget=Budget(tokens=300), max_parallel=4
    )
    run = supervisor.run({"text": "acme"}, store=any_store)
    assert run.status is RunStatus.FAILED, run
    refused = [s for s in run.steps if s.error is not None and s.error.type == "BudgetExceeded"]
    succeeded = [s for s in run.steps if s.name in "abcd" and s.status.value == "succeeded"]
    assert len(refused) == 2 and len(succeeded) == 2
    assert model.calls == 2  # the refused workers made no call
    [budget] = any_store.budgets.for_run(run.id)
    assert budget.spent_tokens <= 300 and budget.held_tokens == 0


def test_a_chain_budget_is_shared_by_every_run_its_events_start(store):
    model = Spender()
    for name in ("chain_left", "chain_right"):
        baton.on("budget.test.asked")(Agent(name, instructions="x", input=Q, output=A, model=model, max_tokens=100))
    chain = baton.publish("budget.test.asked", {"text": "one"}, store=store, budget=Budget(tokens=200))
    baton.wait_chain(chain, store=store, timeout=30)
    runs = [store.runs.get(r.id) for r in store.runs.list(correlation_id=chain)]
    # Each run's one call holds about 145 tokens and spends 140: the chain's 200 pay for one of them.
    assert sorted(r.status.value for r in runs) == ["failed", "succeeded"]
    [failed] = [r for r in runs if r.status is RunStatus.FAILED]
    assert "the event chain's spend" in failed.steps[0].error.message
    assert model.calls == 1
    [shared] = [b for b in store.budgets.for_run(failed.id) if b.chain]
    assert shared.spent_tokens == 140 and shared.held_tokens == 0

    # Raising the run's own budget would not do: it is the chain's that stopped it.
    resumed = baton.resume(failed.id, store=store, budget=Budget(tokens=1_000, chain=True))
    assert resumed.status is RunStatus.SUCCEEDED
    [raised] = [b for b in store.budgets.for_run(failed.id) if b.chain]
    assert raised.tokens == 1_000 and raised.spent_tokens == 280


def test_a_budget_given_on_resume_counts_what_the_run_spent_before_it(store):
    model = ScriptedModel([{"text": "ok"}, ValueError("the model is down"), {"text": "ok"}])
    run = Pipeline("budget-late", agents(model, "before", "after")).run({"text": "hi"}, store=store)
    assert run.status is RunStatus.FAILED and run.failed_step == "after"
    spent_before = run.tokens.input + run.tokens.output
    assert spent_before > 0
    resumed = baton.resume(run.id, store=store, budget=Budget(tokens=10_000))
    assert resumed.status is RunStatus.SUCCEEDED
    [budget] = store.budgets.for_run(run.id)
    assert budget.spent_tokens == resumed.tokens.input + resumed.tokens.output > spent_before


def test_a_hold_nobody_will_settle_is_given_back_when_the_run_is_resumed_and_a_late_settle_adds_only_its_spend(
    store,
):
    model = ScriptedModel([{"text": "ok"}, ValueError("down"), {"text": "ok"}])
    run = Pipeline("budget-dead-hold", agents(model, "one", "two"), budget=Budget(tokens=400)).run(
        {"text": "hi"}, store=store
    )
    assert run.status is RunStatus.FAILED
    # A call of a process that died mid-call: its hold stays until someone takes the run over.
    assert store.budgets.hold("dead-call", [run.id], run_id=run.id, idx=1, tokens=300, usd=0.0) is None
    [stuck] = store.budgets.for_run(run.id)
    assert stuck.held_tokens == 300
    resumed = baton.resume(run.id, store=store)
    assert resumed.status is RunStatus.SUCCEEDED  # 300 held would have left no room for the call
    store.budgets.settle("dead-call", [run.id], tokens=7, usd=0.0)  # the dead call answers after all
    [after] = store.budgets.for_run(run.id)
    assert after.held_tokens == 0
    assert after.spent_tokens == resumed.tokens.input + resumed.tokens.output + 7


def test_baton_run_refuses_a_budget_that_is_not_positive_naming_the_option(tmp_path):
    result = CliRunner().invoke(main, ["run", "nowhere.py:p", "--input", "{}", "--budget-usd", "-1"])
    assert result.exit_code == 2
    assert "--budget-usd" in result.output and "above 0" in result.output
    alone = CliRunner().invoke(main, ["run", "nowhere.py:p", "--input", "{}", "--budget-chain"])
    assert alone.exit_code == 2 and "--budget-chain goes with" in alone.output


def test_budget_exceeded_survives_a_trip_between_processes():
    import pickle

    error = BudgetExceeded("two", "$0.5", "$0.49", "$0.02")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.step == "two"
