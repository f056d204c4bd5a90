"""Events on the local runtime: emit with the checkpoint, delivery to subscribers, dedup, dead letters."""

import pytest
from pydantic import BaseModel, Field

import baton
import baton._ids
import baton.store
from baton import Agent, Pipeline, Retry, RunStatus, ScriptedModel, UserError, emit, on, step
from baton.events import dispatch, redeliver, subscribers


class Request(BaseModel):
    text: str = Field(max_length=200)


class Ticket(BaseModel):
    subject: str = Field(max_length=50)


class Triaged(BaseModel):
    subject: str = Field(max_length=50)
    category: str = Field(max_length=20)


class Done(BaseModel):
    ok: bool


seen: dict[str, list[str]] = {}
switches: dict[str, int] = {}


def _note(name: str, what: str) -> None:
    seen.setdefault(name, []).append(what)


@step(retry=Retry(max_attempts=1))
def intake(request: Request) -> Ticket:
    ticket = Ticket(subject=request.text[:50])
    emit("test.ticket.received", ticket)
    if switches.get("intake_fails_after_emit"):
        raise ValueError("intake broke after emitting")
    return ticket


@on("test.ticket.received")
@step(name="test_triage", retry=Retry(max_attempts=1))
def triage(ticket: Ticket) -> Triaged:
    _note("triage", ticket.subject)
    triaged = Triaged(subject=ticket.subject, category="billing")
    emit("test.ticket.triaged", triaged)
    return triaged


@on("test.ticket.triaged")
@step(name="test_respond", retry=Retry(max_attempts=2, backoff=0.0))
def respond(t: Triaged) -> Done:
    _note("respond", t.category)
    if switches.get("respond_fails"):
        raise baton.TransientError("the mail server is down")
    return Done(ok=True)


intake_pipeline = Pipeline("test-intake", [intake])


@pytest.fixture(autouse=True)
def clean():
    seen.clear()
    switches.clear()
    yield


def _chain(store, run_id):
    run = store.runs.get(run_id)
    baton.wait_chain(run.correlation_id, store=store, timeout=20)
    return store.events.list(correlation_id=run.correlation_id)


def test_an_emitted_event_reaches_its_subscribers_in_runs_of_their_own_on_the_same_chain(store):
    run = intake_pipeline.run({"text": "my invoice is wrong"}, store=store)
    assert run.status is RunStatus.SUCCEEDED
    found = _chain(store, run.id)
    assert [e.type for e in found] == ["test.ticket.triaged", "test.ticket.received"]  # newest first
    received = found[1]
    assert received.source_run == run.id and received.payload == {"subject": "my invoice is wrong"}
    [delivery] = received.deliveries
    assert delivery.subscriber == "test_triage" and delivery.status == "succeeded"
    triage_run = store.runs.get(delivery.run_id)
    assert triage_run.trigger_event == received.id
    assert triage_run.correlation_id == run.correlation_id == run.id
    assert seen == {"triage": ["my invoice is wrong"], "respond": ["billing"]}


def test_an_attempt_that_fails_after_emitting_publishes_nothing(store):
    switches["intake_fails_after_emit"] = 1
    run = intake_pipeline.run({"text": "hello"}, store=store)
    assert run.status is RunStatus.FAILED
    assert _chain(store, run.id) == []
    assert seen == {}


def test_a_payload_that_does_not_fit_a_subscriber_fails_the_emitting_step(store):
    class Wrong(BaseModel):
        subject: int

    @step(retry=Retry(max_attempts=1))
    def bad(request: Request) -> Ticket:
        emit("test.ticket.received", Wrong(subject=3))
        return Ticket(subject="x")

    run = Pipeline("test-bad-emit", [bad]).run({"text": "x"}, store=store)
    assert run.status is RunStatus.FAILED
    error = run.steps[0].error
    assert error.type == "ContractViolation" and "test_triage" in error.message and "subject" in error.message


def test_emit_outside_a_step_says_to_publish_instead():
    with pytest.raises(UserError, match="publish"):
        emit("test.ticket.received", Ticket(subject="x"))


def test_dispatching_an_event_twice_starts_each_subscriber_once(store):
    event_id = baton.publish("test.ticket.triaged", Triaged(subject="s", category="c"), store=store)
    event = store.events.get(event_id)
    baton.wait_chain(event.correlation_id, store=store, timeout=20)
    [sub] = subscribers("test.ticket.triaged")
    from baton.events import deliver

    assert deliver(store, store.events.get(event_id), sub, "local") is None  # a second dispatch
    assert seen == {"respond": ["c"]}
    assert store.events.get(event_id).deliveries[0].deliveries == 1


def test_an_event_left_in_the_outbox_by_a_crash_is_dispatched_by_the_next_sweep(store, monkeypatch):
    monkeypatch.setattr("baton.events.dispatch_soon", lambda *a: None)  # the process died before dispatching
    run = intake_pipeline.run({"text": "lost?"}, store=store)
    [event] = store.events.outbox()
    assert event.source_run == run.id and seen == {}
    monkeypatch.undo()
    assert dispatch(store) == 1
    found = _chain(store, run.id)
    assert len(found) == 2 and seen == {"triage": ["lost?"], "respond": ["billing"]}
    assert store.events.outbox() == []


def test_a_subscriber_that_keeps_failing_is_dead_lettered_and_replay_delivers_again(store):
    switches["respond_fails"] = 1
    event_id = baton.publish("test.ticket.triaged", {"subject": "s", "category": "c"}, store=store)
    baton.wait_chain(event_id, store=store, timeout=20)
    [dead] = store.events.list(dead=True)
    assert dead.id == event_id
    [delivery] = dead.deliveries
    assert delivery.dead and delivery.status == "failed"
    assert store.runs.get(delivery.run_id).step("test_respond").attempts == 2  # its retries, then the letter
    switches.clear()
    [again] = redeliver(store, event_id)
    baton.wait(again, store=store, timeout=20)
    event = store.events.get(event_id)
    assert event.deliveries[0].run_id == again and event.deliveries[0].status == "succeeded"
    assert event.deliveries[0].deliveries == 2
    assert store.events.list(dead=True) == []


def test_on_checks_what_it_subscribes():
    with pytest.raises(baton.DefinitionError, match="above @step"):
        on("test.x")(lambda x: x)
    with pytest.raises(baton.DefinitionError, match="event type"):
        on("no spaces please")
    with pytest.raises(baton.InvalidInput, match="subject"):
        baton.publish("test.ticket.received", {"subject": "x" * 60})


def test_an_event_nobody_subscribes_to_goes_out_to_nobody_and_never_stalls_the_outbox(store):
    for _ in range(150):  # more than one page of the outbox
        store.events.add(baton._ids.new_run_id(), "test.nobody.listens", "{}", "c", baton.store.utcnow())
    assert dispatch(store) == 150
    assert store.events.outbox(limit=1000) == []


def test_a_subscriber_another_process_recorded_is_imported_from_its_target_or_dead_lettered(store):
    store.events.record_subscriptions(
        [
            ("test.ticket.triaged", "elsewhere", "no_such_module_anywhere:handler"),
            ("test.ticket.received", "test_triage", "tests.unit.test_events:triage"),
        ],
        baton.store.utcnow(),
    )
    event_id = baton.publish("test.ticket.triaged", Triaged(subject="s", category="c"), store=store)
    baton.wait_chain(event_id, store=store, timeout=20)
    event = store.events.get(event_id)
    by_name = {d.subscriber: d for d in event.deliveries}
    assert by_name["test_respond"].status == "succeeded"
    assert by_name["elsewhere"].dead and "cannot be imported" in by_name["elsewhere"].error
    assert [e.id for e in store.events.list(dead=True)] == [event_id]


def test_a_delivery_that_succeeded_is_never_replayed(store):
    event_id = baton.publish("test.ticket.triaged", Triaged(subject="s", category="c"), store=store)
    baton.wait_chain(event_id, store=store, timeout=20)
    assert redeliver(store, event_id, subscriber="test_respond") == []
    assert seen == {"respond": ["c"]}


_SUBSCRIBED_AGENT = on("agent.subscribed.target")(
    Agent("subscribed_agent", instructions="x", input=Ticket, output=Ticket, model=ScriptedModel([{"subject": "s"}]))
)


def test_an_agent_subscribed_at_module_level_is_found_by_other_processes_through_its_module():
    [subscription] = subscribers("agent.subscribed.target")
    assert subscription.pattern.target == f"{__name__}:_SUBSCRIBED_AGENT"
