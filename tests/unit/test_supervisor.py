"""The Supervisor pattern on the local runtime: routing, parallel workers, merge, failure and resume."""

import threading

import pytest
from pydantic import BaseModel

import baton
from baton import ContractViolation, DefinitionError, RunStatus, StepStatus, Supervisor, step


class Topic(BaseModel):
    topic: str


class Query(BaseModel):
    q: str


class Finding(BaseModel):
    text: str


class Plan(BaseModel):
    financials: Query | None = None
    news: Query | None = None
    risks: Query | None = None


class Found(BaseModel):
    financials: Finding | None = None
    news: Finding | None = None
    risks: Finding | None = None


class Report(BaseModel):
    body: str


class Harness:
    def __init__(self, parallel=0):
        self.calls: dict[str, int] = {}
        self.fail: set[str] = set()
        self.barrier = threading.Barrier(parallel, timeout=10) if parallel else None
        self.lock = threading.Lock()

    def worker(self, name):
        def body(x: Query) -> Finding:
            with self.lock:
                self.calls[name] = self.calls.get(name, 0) + 1
            if self.barrier is not None:
                self.barrier.wait()  # returns only when the other chosen workers run at the same time
            if name in self.fail:
                raise ValueError(f"{name} is down")
            return Finding(text=f"{name}: {x.q}")

        body.__name__ = f"{name}_worker"
        return step(retry=baton.Retry(max_attempts=1))(body)

    def supervisor(self, name, route=("financials", "news")):
        @step
        def plan(t: Topic) -> Plan:
            return Plan(**{key: Query(q=t.topic) for key in route})

        @step
        def draft(found: Found) -> Report:
            parts = [f.text for f in (found.financials, found.news, found.risks) if f is not None]
            return Report(body=" | ".join(parts))

        workers = {key: self.worker(key) for key in ("financials", "news", "risks")}
        return Supervisor(name, router=plan, workers=workers, merge=draft)


def test_the_chosen_workers_run_in_parallel_and_the_merge_gets_their_outputs(store):
    harness = Harness(parallel=2)
    run = harness.supervisor("research").run({"topic": "ACME"}, store=store)
    assert run.status is RunStatus.SUCCEEDED, [s.error for s in run.steps]
    assert run.output == {"body": "financials: ACME | news: ACME"}
    assert [(s.name, s.status) for s in run.steps] == [
        ("plan", StepStatus.SUCCEEDED),
        ("financials", StepStatus.SUCCEEDED),
        ("news", StepStatus.SUCCEEDED),
        ("risks", StepStatus.SKIPPED),
        ("draft", StepStatus.SUCCEEDED),
    ]
    assert harness.calls == {"financials": 1, "news": 1}


def test_a_failed_worker_fails_the_run_and_resume_reruns_only_that_worker(store):
    harness = Harness()
    harness.fail.add("news")
    supervisor = harness.supervisor("research-resume")
    failed = supervisor.run({"topic": "ACME"}, store=store)
    assert failed.status is RunStatus.FAILED and failed.failed_step == "news"
    assert failed.step("financials").status is StepStatus.SUCCEEDED
    assert failed.step("news").error.message == "news is down"
    assert failed.step("draft").status is StepStatus.PENDING
    harness.fail.clear()
    resumed = baton.resume(failed.id, store=store)
    assert resumed.status is RunStatus.SUCCEEDED
    assert resumed.output == {"body": "financials: ACME | news: ACME"}
    assert harness.calls == {"financials": 1, "news": 2}
    assert resumed.step("news").attempts == 2


def test_routing_to_an_unknown_worker_fails_at_the_routers_boundary(store):
    @step
    def plan(t: Topic) -> Plan:
        return {"financials": {"q": t.topic}, "weather": {"q": "rain"}}  # type: ignore[return-value]

    @step
    def draft(found: Found) -> Report:
        return Report(body="x")

    harness = Harness()
    workers = {key: harness.worker(key) for key in ("financials", "news", "risks")}
    run = Supervisor("bad-route", router=plan, workers=workers, merge=draft).run({"topic": "x"}, store=store)
    assert run.status is RunStatus.FAILED and run.failed_step == "plan"
    error = run.step("plan").error
    assert error.type == "ContractViolation" and "'weather'" in error.message and "names no worker" in error.message
    assert harness.calls == {}


def test_definition_checks_name_the_field_and_the_worker():
    harness = Harness()
    workers = {key: harness.worker(key) for key in ("financials", "news")}

    @step
    def plan(t: Topic) -> Plan:
        return Plan()

    @step
    def draft(found: Found) -> Report:
        return Report(body="")

    with pytest.raises(DefinitionError, match="field 'risks' that names no worker"):
        Supervisor("s1", router=plan, workers=workers, merge=draft)

    class WrongPlan(BaseModel):
        financials: Topic | None = None
        news: Query | None = None
        risks: Query | None = None

    @step
    def wrong(t: Topic) -> WrongPlan:
        return WrongPlan()

    with pytest.raises(DefinitionError, match=r"field 'financials' must be 'Query \| None'"):
        Supervisor("s2", router=wrong, workers={**workers, "risks": harness.worker("risks")}, merge=draft)

    def not_a_step(x: Query) -> Finding:
        return Finding(text="")

    with pytest.raises(DefinitionError, match="forget @step"):
        Supervisor("s3", router=plan, workers={"financials": not_a_step}, merge=draft)


def test_errors_of_the_router_keep_their_types():
    assert issubclass(ContractViolation, baton.BatonError)


def test_many_runs_on_one_store_give_their_connections_back(store):
    harness = Harness()
    supervisor = harness.supervisor("research-many", route=("financials", "news", "risks"))
    for _ in range(25):
        assert supervisor.run({"topic": "ACME"}, store=store).status is RunStatus.SUCCEEDED
    assert store.engine.pool.checkedout() <= 1  # at most this thread's own writer
