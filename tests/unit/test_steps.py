import asyncio

import pytest
from pydantic import BaseModel

from baton import DefinitionError, Retry, Step, step


class In(BaseModel):
    x: int


class Out(BaseModel):
    y: int


def test_step_reads_its_contracts_from_the_annotations():
    @step
    def double(v: In) -> Out:
        return Out(y=v.x * 2)

    assert isinstance(double, Step)
    assert (double.name, double.input, double.output) == ("double", In, Out)
    assert double(In(x=2)) == Out(y=4)


def test_step_with_options_keeps_them():
    policy = Retry(max_attempts=4, backoff=0.5, max_delay=30, jitter=True)

    @step(retry=policy, name="renamed")
    def f(v: In) -> Out:
        return Out(y=v.x)

    assert f.retry is policy
    assert f.name == "renamed"


def test_a_step_without_retry_gets_the_default_policy():
    @step
    def f(v: In) -> Out:
        return Out(y=v.x)

    assert f.retry == Retry()


def test_async_functions_are_steps_too():
    @step
    async def f(v: In) -> Out:
        await asyncio.sleep(0)
        return Out(y=v.x + 1)

    assert f(In(x=1)) == Out(y=2)


def test_missing_input_annotation_fails_at_definition():
    with pytest.raises(DefinitionError, match="annotate parameter 'v'"):

        @step
        def f(v) -> Out:
            return Out(y=1)


def test_missing_return_annotation_fails_at_definition():
    with pytest.raises(DefinitionError, match="annotate the return type"):

        @step
        def f(v: In):
            return Out(y=1)


def test_annotations_that_are_not_contracts_fail_at_definition():
    with pytest.raises(DefinitionError, match="contracts are Pydantic models"):

        @step
        def f(v: dict) -> Out:
            return Out(y=1)


def test_a_step_takes_exactly_one_input():
    with pytest.raises(DefinitionError, match="exactly one required positional parameter"):

        @step
        def f(a: In, b: In) -> Out:
            return Out(y=1)


def test_extra_parameters_with_defaults_are_allowed():
    @step
    def f(v: In, scale: int = 3) -> Out:
        return Out(y=v.x * scale)

    assert f(In(x=2)) == Out(y=6)


def test_retry_given_positionally_is_refused_with_a_hint():
    with pytest.raises(DefinitionError, match="retry=Retry"):
        step(Retry())  # type: ignore[call-overload]


def test_a_bad_retry_option_fails_at_definition():
    with pytest.raises(DefinitionError, match=r"retry= takes a baton\.Retry"):

        @step(retry=3)  # type: ignore[arg-type]
        def f(v: In) -> Out:
            return Out(y=1)


def test_a_bad_step_name_fails_at_definition():
    with pytest.raises(DefinitionError, match="not valid"):

        @step(name="has spaces")
        def f(v: In) -> Out:
            return Out(y=1)
