import pytest
from pydantic import BaseModel

from baton import DefinitionError, Pipeline, step


class A(BaseModel):
    a: int


class B(BaseModel):
    b: int


class C(BaseModel):
    c: int


@step
def a_to_b(x: A) -> B:
    return B(b=x.a)


@step
def b_to_c(x: B) -> C:
    return C(c=x.b)


@step
def a_to_c(x: A) -> C:
    return C(c=x.a)


def test_a_pipeline_knows_its_contracts_and_steps():
    p = Pipeline("p", [a_to_b, b_to_c])
    assert p.input is A and p.output is C
    assert p.step_names == ["a_to_b", "b_to_c"]


def test_mismatched_contracts_fail_at_definition_naming_both_steps():
    with pytest.raises(DefinitionError) as info:
        Pipeline("p", [a_to_b, a_to_c])
    message = str(info.value)
    assert "'a_to_b' returns B" in message and "'a_to_c' takes A" in message


def test_a_subclass_of_the_next_input_fits():
    class SpecialB(B):
        extra: str = ""

    @step
    def a_to_special(x: A) -> SpecialB:
        return SpecialB(b=x.a)

    Pipeline("p", [a_to_special, b_to_c])


def test_a_plain_function_in_the_list_fails_with_a_hint():
    def plain(x: A) -> B:
        return B(b=1)

    with pytest.raises(DefinitionError, match="forget @step"):
        Pipeline("p", [plain])


def test_step_names_must_be_unique():
    with pytest.raises(DefinitionError, match="two steps are named 'a_to_b'"):
        Pipeline("p", [a_to_b, step(name="a_to_b")(b_to_c.fn)])


def test_an_empty_pipeline_fails():
    with pytest.raises(DefinitionError, match="non-empty list"):
        Pipeline("p", [])


def test_a_bad_name_fails():
    with pytest.raises(DefinitionError, match="not valid"):
        Pipeline("no spaces please", [a_to_b])
