"""Pipelines for the self-healing tests: steps that count their executions (see `switches.py`).

`echo` checkpoints the text it is given, so that a test can hand it a value the database refuses; its
retries come fast, so that the Retry limit is reached within a test. `flaky` fails transiently while
`flaky.transient` counts down, and waits two seconds before its next attempt (a countdown in the broker).
`fragile` is a pipeline whose plan has a bug once `plan.bug` exists: what follows its first step cannot be
planned.
"""

from pydantic import BaseModel, Field

# Beside this file: found when baton loads it by path, as workers do.
from switches import _control, _transient, folder

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


@step(retry=Retry(max_attempts=3, backoff=2.0, max_delay=2.0, jitter=False))
def flaky(item: Text) -> Text:
    _control("flaky")
    _transient("flaky")
    return Text(text=item.text + "!")


class Fragile(Pipeline):
    """A pipeline whose plan breaks after its first step while `plan.bug` exists."""

    def follows(self, idx: int):  # type: ignore[no-untyped-def]
        if idx == 0 and (folder() / "plan.bug").exists():
            raise RuntimeError("a bug in this pattern's plan")
        return super().follows(idx)


echoing = Pipeline("echoing", [echo, shout])
retrying = Pipeline("retrying", [echo, flaky, shout])
fragile = Fragile("fragile", [echo, shout])
