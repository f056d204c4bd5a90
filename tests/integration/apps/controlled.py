"""A pipeline whose steps count their executions in files and obey switches, for process-level tests.

BATON_TEST_DIR: where each step appends a line to `<step>.count` when it starts.
`<step>.fail` in that directory: the step raises ValueError with the file's text.
`<step>.block` in that directory: the step writes `<step>.started` and waits until the file is gone.
BATON_TEST_STEPS=short: the pipeline has other steps (to test resume after a code change).
"""

import os
import time
from pathlib import Path

from pydantic import BaseModel, Field

from baton import Pipeline, Retry, step


class Item(BaseModel):
    value: int = Field(ge=0, le=10_000)


def folder() -> Path:
    return Path(os.environ["BATON_TEST_DIR"])


def _control(name: str) -> None:
    folder = Path(os.environ["BATON_TEST_DIR"])
    with open(folder / f"{name}.count", "a") as f:
        f.write("x\n")
    fail = folder / f"{name}.fail"
    if fail.exists():
        raise ValueError(fail.read_text().strip() or f"{name} was told to fail")
    block = folder / f"{name}.block"
    if block.exists():
        (folder / f"{name}.started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while block.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


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
