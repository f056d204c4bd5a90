"""An agent whose scripted model keeps breaking the contract, for the CLI's error display."""

from pydantic import BaseModel, Field

from baton import Agent, Pipeline, ScriptedModel


class Note(BaseModel):
    text: str


class Tags(BaseModel):
    tags: list[str] = Field(max_length=2)


tagger = Pipeline(
    "tagger",
    [
        Agent(
            "tag",
            instructions="Tag the note.",
            input=Note,
            output=Tags,
            model=ScriptedModel(['{"tags": ["a", "b", "c"]}']),
            reasks=1,
        )
    ],
)
