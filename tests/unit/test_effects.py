"""`baton.effect` on the local runtime: done once per run and step, refused where it does not belong."""

import asyncio
import subprocess

import pytest
from pydantic import BaseModel

import baton
import baton.store
from baton import DefinitionError, Pipeline, Retry, TransientError, effect, step
from baton.effects import EffectNotDone
from baton.mail import SmtpSettings

acted: list[str] = []
tries: list[int] = []


class N(BaseModel):
    n: int


@step(side_effect=True, retry=Retry(max_attempts=3, backoff=0.0))
def charge(x: N) -> N:
    receipt = effect("charge", lambda key: acted.append(key) or {"receipt": len(acted)})
    tries.append(1)
    if len(tries) == 1:
        raise TransientError("the network dropped after the charge")  # retried: must not charge again
    return N(n=receipt["receipt"])


@step
def sneaky(x: N) -> N:
    effect("mail", lambda key: None)
    return x


@step(side_effect=True, retry=Retry(max_attempts=2, backoff=0.0))
def flaky_send(x: N) -> N:
    def act(key: str) -> dict:
        acted.append(key)
        if len(acted) == 1:
            raise EffectNotDone("the server was down: nothing was sent")
        return {"ok": True}

    effect("send", act)
    return x


def test_a_retried_step_gets_the_recorded_result_instead_of_acting_again(store):
    acted.clear()
    tries.clear()
    run = Pipeline("fx-charge", [charge]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED and run.steps[0].attempts == 2
    assert acted == [f"{run.id}/charge/charge"] and run.output == {"n": 1}
    assert store.effects.get(f"{run.id}/charge/charge").status == "done"


def test_an_effect_that_raised_did_not_happen_and_a_retry_acts(store):
    acted.clear()
    run = Pipeline("fx-flaky", [flaky_send]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED and len(acted) == 2


@step(side_effect=True, retry=Retry(max_attempts=3, backoff=0.0, on=(BrokenPipeError,)))
def half_sent(x: N) -> N:
    def act(key: str) -> str:
        acted.append(key)
        raise BrokenPipeError("the connection dropped during the send: maybe it went out")

    effect("send", act)
    return x


@step(side_effect=True, retry=Retry(max_attempts=2, backoff=0.0))
def twice(x: N) -> N:
    effect("mail", lambda key: "ch_123")
    effect("mail", lambda key: "ch_456")
    return x


@step(side_effect=True, retry=Retry(max_attempts=2, backoff=0.0))
def receipt(x: N) -> N:
    got = effect("charge", lambda key: acted.append(key) or "123")
    tries.append(1)
    if len(tries) == 1:
        raise TransientError("lost after the charge")
    assert got == "123"  # a string comes back as the string it was
    return x


def test_an_effect_that_failed_part_way_is_uncertain_and_never_done_again(store):
    acted.clear()
    run = Pipeline("fx-half", [half_sent]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.FAILED and len(acted) == 1  # retried, but not acted again
    assert run.steps[0].error.type == "EffectUncertain" and "baton effects mark" in run.steps[0].error.message
    assert store.effects.get(f"{run.id}/half_sent/send").status == "started"


def test_one_name_is_one_effect_per_step_and_results_come_back_as_they_were(store):
    failed = Pipeline("fx-twice", [twice]).run({"n": 1}, store=store)
    assert "twice" in failed.steps[0].error.message and "its own name" in failed.steps[0].error.message
    acted.clear()
    tries.clear()
    run = Pipeline("fx-receipt", [receipt]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED, run.steps[0].error
    assert len(acted) == 1


@step(side_effect=True, retry=Retry(max_attempts=2, backoff=0.0))
def watched(x: N) -> N:
    effect("send", lambda key: acted.append(key) or "sent")
    return x


def test_an_effect_another_live_process_is_doing_is_waited_for_not_called_lost(store):
    # What a takeover finds when the first worker's heartbeat stalled past its lease while it was sending.
    from baton._owner import _owner_of

    acted.clear()
    pipeline = Pipeline("fx-watched", [watched])
    first = pipeline.run({"n": 1}, store=store)  # a run to hang the ledger row on
    key = f"{first.id}/watched/send"
    again = f"{key}/2"  # the key of the effect asked for again by a retry from its step
    sender = subprocess.Popen(["sleep", "60"])
    try:
        claimed = store.effects.begin(again, first.id, 0, "send", baton.store.utcnow(), owner=_owner_of(sender.pid))
        assert claimed is None
        rerun = pipeline.retry(first.id, "watched", store=store)
        waited = baton.wait(rerun, store=store, timeout=20)
        assert waited.status is baton.RunStatus.FAILED
        assert waited.steps[0].error.type == "TransientError" and "in progress" in waited.steps[0].error.message
    finally:
        sender.kill()
        sender.wait()
    assert acted == [key]  # only the first run's own send: the rerun never acted
    # Its owner gone without a record, the effect is uncertain: a person decides.
    resumed = pipeline.resume(first.id, store=store)
    assert resumed.steps[0].error.type == "EffectUncertain"


def test_an_effect_outside_a_declared_step_is_refused(store):
    run = Pipeline("fx-sneaky", [sneaky]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.FAILED
    assert "side_effect=True" in run.steps[0].error.message
    with pytest.raises(DefinitionError, match="inside a step"):
        effect("x", lambda key: None)


def test_the_smtp_url_is_parsed_and_a_bad_one_is_named_without_its_password():
    s = SmtpSettings.from_url("smtps://ann:s%40cret@mail.example.com?from=r@example.com")
    assert (s.host, s.port, s.tls, s.user, s.password, s.sender) == (
        "mail.example.com", 465, True, "ann", "s@cret", "r@example.com",
    )  # fmt: skip
    for bad in (
        "http://ann:hunter2@mail.example.com",
        "smtp://ann:hunter2/x@mail.example.com",  # an unencoded '/' in the password
        "smtp://ann:hunter2@mail.example.com:25",  # a password in clear text over the network
    ):
        with pytest.raises(baton.UserError) as caught:
            SmtpSettings.from_url(bad)
        assert "hunter2" not in str(caught.value), bad
    assert SmtpSettings.from_url("smtp://ann:pw@127.0.0.1:1025").user == "ann"  # a local relay, in the clear
    assert SmtpSettings.from_url("smtp://ann:pw@mail.example.com?starttls=1").starttls


@step(side_effect=True, retry=Retry(max_attempts=3, backoff=0.0))
async def acharge(x: N) -> N:
    async def act(key: str) -> dict:
        await asyncio.sleep(0)
        acted.append(key)
        return {"receipt": len(acted)}

    receipt = await baton.aeffect("charge", act)
    tries.append(1)
    if len(tries) == 1:
        raise TransientError("the network dropped after the charge")
    return N(n=receipt["receipt"])


@step(side_effect=True, retry=Retry(max_attempts=1))
async def awaits_nothing(x: N) -> N:
    async def act(key: str) -> dict:
        acted.append(key)
        return {}

    effect("send", lambda key: act(key))  # the sync form handed a coroutine: refused, never half-recorded
    return x


@pytest.mark.parametrize("how", ["run", "arun"])
def test_an_async_steps_effect_is_awaited_and_done_once(store, how):
    acted.clear()
    tries.clear()
    pipeline = Pipeline(f"fx-acharge-{how}", [acharge])
    run = pipeline.run({"n": 1}, store=store) if how == "run" else asyncio.run(pipeline.arun({"n": 1}, store=store))
    assert run.status is baton.RunStatus.SUCCEEDED and run.steps[0].attempts == 2
    assert acted == [f"{run.id}/acharge/charge"]
    assert store.effects.get(f"{run.id}/acharge/charge").status == "done"


def test_the_sync_effect_refuses_an_async_act_before_it_records_anything(store):
    acted.clear()
    run = Pipeline("fx-awaits-nothing", [awaits_nothing]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.FAILED
    assert "await baton.aeffect" in run.steps[0].error.message
    assert acted == []
    assert store.effects.get(f"{run.id}/awaits_nothing/send") is None


# -- what an effect returns, and a person who settles it with that --------------------------------------------


class Receipt(BaseModel):
    id: str
    amount: int


@step(side_effect=True, retry=Retry(max_attempts=2, backoff=0.0))
def bill(x: N) -> N:
    got = effect("bill", lambda key: acted.append(key) or Receipt(id=key, amount=x.n), returns=Receipt)
    assert isinstance(got, Receipt), got  # the model, the first time and from the ledger
    tries.append(1)
    if len(tries) == 1:
        raise TransientError("lost after the bill")
    return N(n=got.amount)


def test_a_declared_result_comes_back_as_its_model_the_first_time_and_from_the_ledger(store):
    acted.clear()
    tries.clear()
    run = Pipeline("fx-bill", [bill]).run({"n": 4}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED, run.steps[0].error
    assert run.steps[0].attempts == 2 and len(acted) == 1 and run.output == {"n": 4}
    recorded = store.effects.get(f"{run.id}/bill/bill")
    assert recorded.result == {"id": recorded.key, "amount": 4}  # stored as JSON
    assert recorded.result_schema["title"] == "Receipt" and recorded.result_schema["required"] == ["id", "amount"]


def annotated_act(key: str) -> Receipt:
    acted.append(key)
    return Receipt(id=key, amount=7)


@step(side_effect=True, retry=Retry(max_attempts=1))
def bill_annotated(x: N) -> N:
    return N(n=effect("bill", annotated_act).amount)  # the act's annotation declares the result


@step(side_effect=True, retry=Retry(max_attempts=1))
def bill_wrongly(x: N) -> N:
    effect("bill", lambda key: acted.append(key) or {"id": key, "amount": "ten"}, returns=Receipt)
    return x


def test_an_annotated_act_declares_its_result_and_one_that_does_not_fit_names_the_field(store):
    acted.clear()
    run = Pipeline("fx-bill-annotated", [bill_annotated]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED and run.output == {"n": 7}
    assert store.effects.get(f"{run.id}/bill_annotated/bill").result_schema["title"] == "Receipt"

    wrong = Pipeline("fx-bill-wrongly", [bill_wrongly]).run({"n": 1}, store=store)
    error = wrong.steps[0].error
    assert error.type == "ContractViolation" and "field 'amount'" in error.message, error
    assert "--result" in error.message  # how to put the record right
    key = f"{wrong.id}/bill_wrongly/bill"
    # It happened all the same: recorded as done, as returned, and never done again.
    assert (store.effects.get(key).status, store.effects.get(key).result["amount"]) == ("done", "ten")
    assert len(acted) == 2


@step(side_effect=True, retry=Retry(max_attempts=3, backoff=0.0, on=(BrokenPipeError,)))
def pay(x: N) -> N:
    def act(key: str) -> Receipt:
        acted.append(key)
        if len(acted) == 1:
            raise BrokenPipeError("the connection dropped after the payment went out")
        return Receipt(id="never", amount=0)

    return N(n=effect("pay", act, returns=Receipt).amount)


@step(side_effect=True, retry=Retry(max_attempts=3, backoff=0.0, on=(BrokenPipeError,)))
def notify(x: N) -> N:
    def act(key: str) -> None:
        acted.append(key)
        raise BrokenPipeError("the connection dropped during the notice")

    effect("notify", act)
    return x


def test_an_uncertain_effect_whose_result_is_used_is_settled_only_with_a_result_that_fits(store):
    from baton.effects import settle

    acted.clear()
    pipeline = Pipeline("fx-pay", [pay])
    run = pipeline.run({"n": 1}, store=store)
    key = f"{run.id}/pay/pay"
    error = run.steps[0].error
    assert error.type == "EffectUncertain" and f"baton effects mark {key} --done --result JSON" in error.message
    assert "a Receipt" in error.message

    with pytest.raises(baton.UserError, match=r"give it as JSON with --result \(Receipt: an object with id, amount\)"):
        settle(store, key, done=True)
    with pytest.raises(baton.UserError, match="field 'amount': missing"):
        settle(store, key, done=True, result={"id": "ch_1"})
    with pytest.raises(baton.UserError, match="""field 'amount': "ten" is not of type integer"""):
        settle(store, key, done=True, result={"id": "ch_1", "amount": "ten"})
    with pytest.raises(baton.UserError, match="--result is for an effect that happened"):
        settle(store, key, done=False, result={"id": "ch_1", "amount": 5})
    with pytest.raises(baton.UserError, match=r"id.*NUL|NUL.*id"):  # what no store can keep
        settle(store, key, done=True, result={"id": "ch_\x001", "amount": 5})
    assert store.effects.get(key).status == "started"  # every refusal recorded nothing

    assert settle(store, key, done=True, result={"id": "ch_1", "amount": 5}).status == "done"
    resumed = pipeline.resume(run.id, store=store)
    assert resumed.status is baton.RunStatus.SUCCEEDED and resumed.output == {"n": 5}
    assert acted == [key]  # paid once, by the first attempt


def test_an_uncertain_effect_whose_result_is_not_used_is_settled_with_done_alone(store):
    from baton.effects import settle

    acted.clear()
    pipeline = Pipeline("fx-notify", [notify])
    run = pipeline.run({"n": 1}, store=store)
    key = f"{run.id}/notify/notify"
    assert "--result" not in run.steps[0].error.message  # `-> None`: nothing to give
    assert store.effects.get(key).result_schema is None
    assert settle(store, key, done=True).status == "done"
    assert pipeline.resume(run.id, store=store).status is baton.RunStatus.SUCCEEDED and len(acted) == 1


@step(side_effect=True, retry=Retry(max_attempts=2, backoff=0.0))
async def abill(x: N) -> N:
    async def act(key: str) -> dict:
        acted.append(key)
        return {"id": key, "amount": x.n}

    got = await baton.aeffect("bill", act, returns=Receipt)
    assert isinstance(got, Receipt), got
    tries.append(1)
    if len(tries) == 1:
        raise TransientError("lost after the bill")
    return N(n=got.amount)


def test_an_async_effect_declares_its_result_the_same_way(store):
    acted.clear()
    tries.clear()
    run = asyncio.run(Pipeline("fx-abill", [abill]).arun({"n": 6}, store=store))
    assert run.status is baton.RunStatus.SUCCEEDED and run.output == {"n": 6} and len(acted) == 1
    assert store.effects.get(f"{run.id}/abill/bill").result_schema["title"] == "Receipt"


# -- the store in trouble around an effect ---------------------------------------------------------------


def _trouble() -> Exception:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    return OperationalError("UPDATE baton_effects", {}, sqlite3.OperationalError("database is locked"))


@step(side_effect=True, retry=Retry(max_attempts=1))
def send_once(x: N) -> N:
    effect("send", lambda key: acted.append(key) or "sent")
    return x


def test_a_ledger_write_that_meets_the_stores_trouble_waits_it_out_instead_of_failing_the_step(store, monkeypatch):
    # A database restarting right after the act: the record of what happened waits for it, as a checkpoint
    # does, instead of failing the step and leaving an effect that happened uncertain.
    acted.clear()
    finish, failures = store.effects.finish, [_trouble(), _trouble()]

    def restarting(*args, **kwargs):
        if failures:
            raise failures.pop()
        return finish(*args, **kwargs)

    monkeypatch.setattr(store.effects, "finish", restarting)
    run = Pipeline("fx-restarting", [send_once]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED, run.steps[0].error
    assert len(acted) == 1 and not failures
    assert store.effects.get(f"{run.id}/send_once/send").status == "done"


def test_a_claim_that_committed_before_its_connection_broke_is_this_attempts_own(store, monkeypatch):
    # The claim's commit went through but its answer was lost: made again, it finds its own claim, not an
    # uncertain effect of some earlier attempt, and acts (once).
    acted.clear()
    begin, broke = store.effects.begin, []

    def answer_lost(*args, **kwargs):
        found = begin(*args, **kwargs)
        if not broke:
            broke.append(1)
            raise _trouble()
        return found

    monkeypatch.setattr(store.effects, "begin", answer_lost)
    run = Pipeline("fx-answer-lost", [send_once]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED, run.steps[0].error
    assert broke and len(acted) == 1
