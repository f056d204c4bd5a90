"""The local runtime on a real SQLite store: what runs, what is recorded, what resumes."""

import threading

import pytest
from pydantic import BaseModel, Field

import baton
import baton._owner
from baton import InvalidInput, Pipeline, Retry, RunNotResumable, RunStatus, StepStatus, TransientError, step


class Num(BaseModel):
    n: int = Field(ge=0, le=1000)


class Calls:
    def __init__(self):
        self.count: dict[str, int] = {}
        self.fail: dict[str, list[BaseException]] = {}

    def hit(self, name):
        self.count[name] = self.count.get(name, 0) + 1
        errors = self.fail.get(name)
        if errors:
            raise errors.pop(0)


def make(calls: Calls, name="p", retry=None):
    def mk(step_name, fn):
        def body(x: Num) -> Num:
            calls.hit(step_name)
            return fn(x)

        body.__name__ = step_name
        return step(retry=retry or Retry(max_attempts=3, backoff=0, jitter=False))(body)

    return Pipeline(
        name,
        [
            mk("add", lambda x: Num(n=x.n + 1)),
            mk("double", lambda x: Num(n=x.n * 2)),
            mk("square", lambda x: Num(n=x.n**2)),
        ],
    )


def test_a_run_executes_every_step_and_records_each_checkpoint(store):
    calls = Calls()
    run = make(calls).run({"n": 2}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"n": 36}
    assert [s.output for s in run.steps] == [{"n": 3}, {"n": 6}, {"n": 36}]
    assert store.runs.get(run.id).to_json_dict() == run.to_json_dict()


def test_bad_input_is_refused_before_any_run_exists(store):
    with pytest.raises(InvalidInput, match="field 'n'"):
        make(Calls()).run({"n": -1}, store=store)
    assert store.runs.list() == []


def test_a_failing_step_records_type_message_and_traceback(store):
    calls = Calls()
    calls.fail["double"] = [ValueError("bad number")]
    run = make(calls).run({"n": 1}, store=store)
    assert run.status is RunStatus.FAILED and run.failed_step == "double"
    failed = run.step("double")
    assert failed.status is StepStatus.FAILED
    assert failed.error.type == "ValueError" and failed.error.message == "bad number"
    assert "raise errors.pop(0)" in failed.error.traceback
    assert run.step("square").status is StepStatus.PENDING
    assert calls.count == {"add": 1, "double": 1}  # a bug is not retried


def test_transient_errors_are_retried_and_every_attempt_is_kept(store):
    calls = Calls()
    calls.fail["double"] = [ConnectionError("reset"), TransientError("busy")]
    run = make(calls).run({"n": 1}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    record = run.step("double")
    assert record.attempts == 3
    assert [(a.attempt, a.error.type, a.retried) for a in record.attempt_errors] == [
        (1, "ConnectionError", True),
        (2, "TransientError", True),
    ]


def test_the_final_error_is_kept_when_retries_run_out(store):
    calls = Calls()
    calls.fail["add"] = [ConnectionError("1"), ConnectionError("2"), ConnectionError("3")]
    run = make(calls).run({"n": 1}, store=store)
    assert run.status is RunStatus.FAILED
    assert run.step("add").attempts == 3
    assert run.step("add").error.message == "3"
    assert [a.retried for a in run.step("add").attempt_errors] == [True, True, False]


def test_an_output_that_breaks_its_contract_fails_that_step(store):
    @step
    def too_big(x: Num) -> Num:
        return Num.model_construct(n=5000)

    run = Pipeline("bounds", [too_big]).run({"n": 1}, store=store)
    assert run.status is RunStatus.FAILED
    error = run.step("too_big").error
    assert error.type == "ContractViolation"
    assert "step 'too_big'" in error.message and "Num" in error.message and "field 'n'" in error.message


def test_resume_skips_steps_that_already_succeeded(store):
    calls = Calls()
    calls.fail["square"] = [ValueError("not yet")]
    pipeline = make(calls, name="resumable")
    failed = pipeline.run({"n": 2}, store=store)
    assert failed.status is RunStatus.FAILED
    resumed = baton.resume(failed.id, store=store)
    assert resumed.status is RunStatus.SUCCEEDED and resumed.output == {"n": 36}
    assert calls.count == {"add": 1, "double": 1, "square": 2}
    assert resumed.step("square").attempts == 2
    assert resumed.step("add").attempts == 1


def test_resume_refuses_a_run_whose_steps_changed(store):
    calls = Calls()
    calls.fail["double"] = [ValueError("x")]
    failed = make(calls, name="changing").run({"n": 1}, store=store)

    @step
    def other(x: Num) -> Num:
        return x

    changed = Pipeline("changing", [other])
    with pytest.raises(RunNotResumable, match="recorded steps"):
        changed.resume(failed.id, store=store)


def test_resume_refuses_a_run_that_succeeded(store):
    run = make(Calls(), name="done").run({"n": 1}, store=store)
    with pytest.raises(RunNotResumable, match="already succeeded"):
        baton.resume(run.id, store=store)


def test_cancel_during_a_step_stops_the_run_after_it(store):
    calls = Calls()
    started, release = threading.Event(), threading.Event()

    @step
    def slow(x: Num) -> Num:
        started.set()
        release.wait(10)
        return x

    @step
    def after(x: Num) -> Num:
        calls.hit("after")
        return x

    run_id = Pipeline("cancellable", [slow, after]).submit({"n": 1}, store=store)
    assert started.wait(10)
    assert baton.cancel(run_id, store=store) is RunStatus.RUNNING
    release.set()
    run = baton.wait(run_id, store=store, timeout=10)
    assert run.status is RunStatus.CANCELLED
    assert run.step("slow").status is StepStatus.SUCCEEDED
    assert run.step("after").status is StepStatus.CANCELLED
    assert calls.count == {}


def test_cancelling_an_idle_run_ends_it_at_once(store):
    calls = Calls()
    calls.fail["add"] = [ValueError("x")]
    failed = make(calls, name="idle").run({"n": 1}, store=store)
    assert baton.cancel(failed.id, store=store) is RunStatus.CANCELLED
    assert store.runs.get(failed.id).status is RunStatus.CANCELLED
    with pytest.raises(baton.UserError, match="already cancelled"):
        baton.cancel(failed.id, store=store)


def test_submit_returns_the_id_at_once_and_the_run_finishes(store):
    run_id = make(Calls(), name="submitted").submit({"n": 1}, store=store)
    assert len(run_id) == 32
    run = baton.wait(run_id, store=store, timeout=10)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"n": 16}


def test_runs_are_listed_newest_first_with_filters(store):
    calls = Calls()
    p = make(calls, name="listed")
    ids = [p.run({"n": i}, store=store).id for i in range(3)]
    calls.fail["add"] = [ValueError("x")]
    failed = p.run({"n": 9}, store=store).id
    assert [r.id for r in store.runs.list()] == [failed, *reversed(ids)]
    assert [r.id for r in store.runs.list(status="failed")] == [failed]
    assert [r.id for r in store.runs.list(limit=2, before=ids[2])] == [ids[1], ids[0]]
    assert store.runs.list(pipeline="nope") == []


def test_a_unique_prefix_finds_a_run(store):
    run = make(Calls(), name="prefixed").run({"n": 1}, store=store)
    assert store.runs.get(run.id[:20]).id == run.id
    with pytest.raises(baton.RunNotFound):
        store.runs.get("ffffffffffff")


def test_a_prefix_too_short_to_name_a_run_says_so(store):
    run = make(Calls(), name="prefixed").run({"n": 1}, store=store)
    assert store.runs.get(run.id[:8]).id == run.id  # the shortest prefix that may name a run
    for short in (run.id[:7], run.id[:2], ""):
        with pytest.raises(baton.RunNotFound, match=f"run id prefix '{short}' is too short: give at least 8"):
            store.runs.get(short)
    with pytest.raises(baton.UserError, match=f"event id prefix '{run.id[:5]}' is too short"):
        store.events.get(run.id[:5])
    with pytest.raises(baton.RunNotFound, match="no run with id 'nope'"):  # not an id's start: not a prefix
        store.runs.get("nope")


def test_a_cancel_during_retries_stops_the_retrying(store):
    attempts = []

    @step(retry=Retry(max_attempts=5, backoff=0, jitter=False))
    def flaky(x: Num) -> Num:
        attempts.append(1)
        (running,) = store.runs.list(status="running")
        baton.cancel(running.id, store=store)
        raise ConnectionError("down")

    run = Pipeline("cancel-retries", [flaky]).run({"n": 1}, store=store)
    assert run.status is RunStatus.CANCELLED
    assert len(attempts) == 1


def test_a_step_that_builds_an_invalid_contract_fails_at_its_boundary(store):
    class Short(BaseModel):
        text: str = Field(max_length=5)

    @step
    def writes_too_much(x: Num) -> Short:
        return Short(text="much more than five characters")

    run = Pipeline("builds-invalid", [writes_too_much]).run({"n": 1}, store=store)
    error = run.step("writes_too_much").error
    assert error.type == "ContractViolation"
    assert "step 'writes_too_much': output violates contract Short: field 'text'" in error.message


def test_only_the_contracts_fields_cross_the_boundary(store):
    class Wide(Num):
        secret: str = "not for the next step"

    @step
    def widens(x: Num) -> Num:
        return Wide(n=x.n)

    run = Pipeline("narrows", [widens]).run({"n": 3}, store=store)
    assert run.output == {"n": 3}
    assert store.runs.get(run.id).steps[0].output == {"n": 3}


def test_a_pending_run_is_not_resumed_by_hand(store):
    calls = Calls()
    pipeline = make(calls, name="pending-guard")
    with store.writer() as w:
        from baton.runtime.records import create_run

        run_id, *_ = create_run(w, store, pipeline, Num(n=1), baton._owner.this_owner(), pending=True)
    with pytest.raises(RunNotResumable, match="pending"):
        baton.resume(run_id, store=store)
