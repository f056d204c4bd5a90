import pickle

import pytest
from pydantic import BaseModel, Field

from baton import Cancelled, ContractViolation, InvalidInput, RunNotQueued, StepFailed, UserError
from baton.contracts import validate_input, validate_output


class Letter(BaseModel):
    body: str = Field(max_length=5)


def test_output_violation_names_step_contract_and_field():
    with pytest.raises(ContractViolation) as info:
        validate_output(Letter, Letter.model_construct(body="far too long"), step="write_letter")
    err = info.value
    assert (err.step, err.contract) == ("write_letter", "Letter")
    assert err.errors[0]["field"] == "body"
    assert "step 'write_letter'" in str(err) and "Letter" in str(err) and "'body'" in str(err)


def test_returning_another_model_is_a_violation():
    class Other(BaseModel):
        body: str = ""

    with pytest.raises(ContractViolation, match="returned a Other, not a Letter"):
        validate_output(Letter, Other(), step="s")


def test_a_dict_output_is_validated_into_the_contract():
    value, raw = validate_output(Letter, {"body": "hi"}, step="s")
    assert value == Letter(body="hi") and raw == '{"body":"hi"}'


def test_bad_input_is_the_users_mistake():
    with pytest.raises(InvalidInput) as info:
        validate_input(Letter, {"body": 3}, step="first")
    assert isinstance(info.value, UserError)
    assert info.value.errors[0]["field"] == "body"


@pytest.mark.parametrize(
    "error",
    [
        ContractViolation(contract="C", errors=[{"field": "f", "message": "m", "type": "t"}], step="s", where="output"),
        InvalidInput(contract="C", errors=[{"field": "f", "message": "m", "type": "t"}], step="s", where="input"),
        StepFailed("run1", "s", "ValueError", "boom"),
        RunNotQueued("run1", "cannot reach the Celery broker at redis://h:6379/0 (BATON_BROKER_URL): refused"),
        Cancelled("run1"),
    ],
)
def test_errors_survive_pickling_across_processes(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_cancellation_cannot_be_swallowed_by_except_exception():
    assert not issubclass(Cancelled, Exception)
