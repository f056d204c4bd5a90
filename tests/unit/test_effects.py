"""`baton.effect` on the local runtime: done once per run and step, refused where it does not belong."""

import pytest
from pydantic import BaseModel

import baton
from baton import DefinitionError, Pipeline, Retry, TransientError, effect, step
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
            raise ConnectionRefusedError("the server was down: nothing was sent")
        return {"ok": True}

    effect("send", act)
    return x


def test_a_retried_step_gets_the_recorded_result_instead_of_acting_again(store):
    acted.clear()
    tries.clear()
    run = Pipeline("fx-charge", [charge]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED and run.steps[0].attempts == 2
    assert acted == [f"{run.id}/charge/charge"] and run.output == {"n": 1}
    assert store.get_effect(f"{run.id}/charge/charge").status == "done"


def test_an_effect_that_raised_did_not_happen_and_a_retry_acts(store):
    acted.clear()
    run = Pipeline("fx-flaky", [flaky_send]).run({"n": 1}, store=store)
    assert run.status is baton.RunStatus.SUCCEEDED and len(acted) == 2


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
    with pytest.raises(baton.UserError) as caught:
        SmtpSettings.from_url("http://ann:hunter2@mail.example.com")
    assert "hunter2" not in str(caught.value) and "mail.example.com" in str(caught.value)
