"""A pipeline whose steps count their executions in files and obey switches, for process-level tests.

BATON_TEST_DIR: where each step appends a line to `<step>.count` when it starts.
`<step>.fail` in that directory: the step raises ValueError with the file's text.
`<step>.block` in that directory: the step writes `<step>.started` and waits until the file is gone.
`<step>.crash` in that directory: the step kills its own process with SIGKILL.
BATON_TEST_STEPS=short: the pipeline has other steps (to test resume after a code change).
BATON_TEST_BROKEN_IMPORT=1: importing this file fails (a worker without the pipeline's code).
"""

import os

from pydantic import BaseModel, Field

# Beside this file: found when baton loads it by path, as workers do.
from switches import _control

from baton import Pipeline, Retry, step

if os.environ.get("BATON_TEST_BROKEN_IMPORT"):
    raise ImportError("controlled.py: this worker cannot import the pipeline's code")


class Item(BaseModel):
    value: int = Field(ge=0, le=10_000)


NO_RETRY = Retry(max_attempts=1)


@step(retry=NO_RETRY)
def fetch(item: Item) -> Item:
    _control("fetch")
    return Item(value=item.value + 1)


@step(retry=NO_RETRY)
def transform(item: Item) -> Item:
    _control("transform")
    return Item(value=item.value * 10)


@step(retry=NO_RETRY)
def publish(item: Item) -> Item:
    _control("publish")
    return Item(value=item.value + 5)


if os.environ.get("BATON_TEST_STEPS") == "short":
    controlled = Pipeline("controlled", [fetch, publish])
else:
    controlled = Pipeline("controlled", [fetch, transform, publish])
