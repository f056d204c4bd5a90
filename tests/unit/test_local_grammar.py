"""The schema the embedded model's grammar is built from: narrow ranges spelled out as values."""

from pydantic import BaseModel, Field

from baton.providers.local import grammar_schema


class Scored(BaseModel):
    confidence: float = Field(ge=0, le=1)
    stars: int = Field(ge=1, le=5)
    revenue: float = Field(ge=0, le=1e9)
    notes: list[str] = Field(max_length=3)


def test_a_unit_interval_becomes_its_values_in_steps_of_five_hundredths():
    props = grammar_schema(Scored.model_json_schema())["properties"]
    assert props["confidence"]["enum"][:3] == [0.0, 0.05, 0.1] and props["confidence"]["enum"][-1] == 1.0
    assert "type" not in props["confidence"] and "maximum" not in props["confidence"]


def test_a_small_integer_range_becomes_its_integers_and_wide_ranges_stay_as_they_are():
    props = grammar_schema(Scored.model_json_schema())["properties"]
    assert props["stars"]["enum"] == [1, 2, 3, 4, 5]
    assert props["revenue"] == Scored.model_json_schema()["properties"]["revenue"]
    assert props["notes"] == Scored.model_json_schema()["properties"]["notes"]


def test_every_value_the_grammar_allows_is_one_the_contract_accepts():
    props = grammar_schema(Scored.model_json_schema())["properties"]
    for value in props["confidence"]["enum"]:
        Scored(confidence=value, stars=1, revenue=0, notes=[])
