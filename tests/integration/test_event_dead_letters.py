"""An event that cannot be handed over is tried a bounded number of times, further apart each time, then
becomes a dead letter with its reason, which `baton events --dead` shows and a replay delivers; alike on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from sqlalchemy import select, text

import baton
import baton.events
from baton import Pipeline, RunStatus, emit, on, step
from baton._ids import new_run_id
from baton.events import MAX_TRIES, dispatch, redeliver
from baton.runtime.base import hooks
from baton.store import utcnow
from baton.store.schema import events
from baton.web.access import Access
from baton.web.app import create_app
from tests.integration.commands import baton as baton_cli

REFUSED = "the database refuses this run"


class Parcel(BaseModel):
    label: str = Field(max_length=50)


class Received(BaseModel):
    ok: bool


@on("test.parcel.sent")
@step(name="test_parcel_receiver")
def receive(parcel: Parcel) -> Received:
    return Received(ok=True)


@step
def send(parcel: Parcel) -> Parcel:
    emit("test.parcel.sent", parcel)
    return parcel


SENDER = Pipeline("test-parcel-sender", [send])


def _refuse_runs(store, refuse: bool) -> None:
    """A trigger that makes the database refuse the receiver's runs (as it would refuse a value it cannot keep)."""
    postgres = store.engine.dialect.name == "postgresql"
    with store.engine.begin() as c:
        if not refuse:
            c.execute(text("DROP TRIGGER test_refuse ON baton_runs" if postgres else "DROP TRIGGER test_refuse"))
        elif postgres:
            c.execute(
                text(
                    "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN RAISE EXCEPTION '{REFUSED}'; END $$"
                )
            )
            c.execute(
                text(
                    "CREATE TRIGGER test_refuse BEFORE INSERT ON baton_runs FOR EACH ROW "
                    "WHEN (NEW.pipeline = 'test_parcel_receiver') EXECUTE FUNCTION test_refuse()"
                )
            )
        else:
            c.execute(
                text(
                    "CREATE TRIGGER test_refuse BEFORE INSERT ON baton_runs "
                    f"WHEN NEW.pipeline = 'test_parcel_receiver' BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
                )
            )


def _outboxed(store, payload_json: str = '{"label": "p"}') -> str:
    """An event in the outbox, as a crash leaves it (nothing dispatches it on its own)."""
    event_id = new_run_id()
    store.events.add(event_id, "test.parcel.sent", payload_json, event_id, utcnow() - timedelta(seconds=1))
    return event_id


def test_an_event_the_database_keeps_refusing_is_a_dead_letter_after_max_tries_and_never_tried_again(
    any_store, monkeypatch
):
    monkeypatch.setattr(baton.events, "RETRY_SECONDS", 0.0)  # sweeps back to back, no waiting between tries
    _refuse_runs(any_store, True)
    event_id = _outboxed(any_store)
    for tries in range(1, MAX_TRIES):
        hooks.swept(any_store, "local", 0.0)
        event = any_store.events.get(event_id)
        assert (event.tries, event.dispatched_at, event.deliveries) == (tries, None, ())
        assert REFUSED in event.last_error
    hooks.swept(any_store, "local", 0.0)
    [dead] = any_store.events.list(dead=True)
    assert dead.id == event_id and dead.dispatched_at is not None and dead.tries == MAX_TRIES
    [delivery] = dead.deliveries
    assert delivery.subscriber == "test_parcel_receiver" and delivery.status == "undeliverable"
    assert delivery.error.startswith(f"not handed over after {MAX_TRIES} tries; the last failed with ")
    assert REFUSED in delivery.error

    hooks.swept(any_store, "local", 0.0)  # out of the outbox: never tried again
    assert any_store.events.get(event_id).tries == MAX_TRIES and any_store.events.outbox() == []

    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env |= {"BATON_DATABASE_URL": any_store.url}
    [shown] = json.loads(baton_cli(env, "events", "--dead", "--json", check=0).stdout)
    assert shown["id"] == event_id and shown["deliveries"][0]["error"] == delivery.error
    table = baton_cli(env, "events", "--dead", check=0).stdout
    words = " ".join(table.replace("│", " ").split())  # the reason's column, wrapped, read as one text
    assert event_id in table and f"undeliverable not handed over after {MAX_TRIES} tries" in words

    _refuse_runs(any_store, False)  # the cause is fixed: the dead letter is replayed as any other
    [run_id] = redeliver(any_store, event_id)
    assert baton.wait(run_id, store=any_store, timeout=20).status is RunStatus.SUCCEEDED
    assert any_store.events.list(dead=True) == []


def test_a_failed_try_puts_the_next_off_longer_each_time(any_store):
    _refuse_runs(any_store, True)
    event_id = _outboxed(any_store)
    before = utcnow()
    dispatch(any_store)
    first = any_store.events.get(event_id)
    assert first.tries == 1
    dispatch(any_store)  # too soon: not tried
    assert any_store.events.get(event_id).tries == 1
    dispatch(any_store, now_too=True)  # a person asks (`baton events dispatch`): tried now, and counted
    assert any_store.events.get(event_id).tries == 2
    with any_store.engine.connect() as c:
        retry_at = c.execute(select(events.c.retry_at).where(events.c.id == event_id)).scalar_one()
    # After the second failure, twice the first wait.
    wait = (retry_at - before).total_seconds()
    assert 2 * baton.events.RETRY_SECONDS <= wait < 2 * baton.events.RETRY_SECONDS + 5


def test_an_event_whose_payload_holds_nul_is_a_dead_letter_at_once_naming_the_field(any_store):
    # Written before baton refused such payloads (or by hand): it must not go round every sweep forever.
    event_id = _outboxed(any_store, '{"label": "a\\u0000b"}')
    assert dispatch(any_store) == 1
    [delivery] = any_store.events.get(event_id).deliveries
    assert delivery.status == "undeliverable" and "field 'label': the string holds a NUL character" in delivery.error
    assert any_store.events.outbox() == []


def test_the_dashboard_shows_an_emitted_event_s_failed_tries_then_its_dead_letter(any_store, monkeypatch):
    monkeypatch.setattr(baton.events, "RETRY_SECONDS", 0.0)
    _refuse_runs(any_store, True)
    run = SENDER.run({"label": "p"}, store=any_store)
    [event] = any_store.events.outbox()
    app = create_app(any_store, sweep=False, access=Access.from_setting("dead-letter-token"))
    with TestClient(app, headers={"Authorization": "Bearer dead-letter-token"}) as client:
        dispatch(any_store)
        page = client.get(f"/ui/runs/{run.id}").text
        assert "1 failed try" in page and REFUSED in page and "dead letter" not in page
        for _ in range(MAX_TRIES - 1):
            dispatch(any_store)
        page = client.get(f"/ui/runs/{run.id}").text
        assert "dead letter</span> test_parcel_receiver: undeliverable" in page
        assert f"not handed over after {MAX_TRIES} tries" in page and "failed tries" not in page
        shown = client.get(f"/events/{event.id}").json()
        assert shown["tries"] == MAX_TRIES and REFUSED in shown["deliveries"][0]["error"]


@pytest.fixture(autouse=True)
def _no_background_dispatch(monkeypatch):
    # Only the dispatches a test makes: a background one would count tries of its own.
    monkeypatch.setattr(baton.events, "dispatch_soon", lambda *a, **k: None)
