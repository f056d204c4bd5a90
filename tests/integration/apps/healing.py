"""Pipelines for the self-healing tests: steps that count their executions (see `switches.py`).

`echo` checkpoints the text it is given, so that a test can hand it a value the database refuses; its
retries come fast, so that the Retry limit is reached within a test.
"""

from pydantic import BaseModel, Field

# Beside this file: found when baton loads it by path, as workers do.
from switches import _control

from baton import Pipeline, Retry, step


class Text(BaseModel):
    text: str = Field(max_length=200)


@step(retry=Retry(max_attempts=3, backoff=0.1, max_delay=0.3))
def echo(item: Text) -> Text:
    _control("echo")
    return Text(text=item.text)


@step
def shout(item: Text) -> Text:
    _control("shout")
    return Text(text=item.text.upper())


echoing = Pipeline("echoing", [echo, shout])
