"""Steps under timeouts and agents under budgets, for the tests of the production controls on worker processes.

BATON_TEST_DIR: each timed step appends a line to `<step>.count` when an attempt starts (the attempt's number
is the count so far: process memory would not survive the worker's retries), and an attempt that sleeps past
its timeout writes `<step>.<n>.late` when it wakes. Every task a worker starts appends its name, arguments and
Celery time limits to `tasks.jsonl`.
BATON_OPENAI_BASE_URL: the loopback server the agents' `openai:` model calls go to.
"""

import json
import os
import threading
import time
from pathlib import Path

from celery.signals import task_prerun
from pydantic import BaseModel, Field

from baton import Agent, Budget, Pipeline, Retry, Supervisor, TransientError, emit, on, step

# A late attempt sleeps this long: well past its timeout, and short enough for a test to see it end.
SLEEP = 2.0
TIMEOUT = 0.5
_lock = threading.Lock()


def _folder() -> Path:
    return Path(os.environ["BATON_TEST_DIR"])


@task_prerun.connect
def _note_task(task=None, args=None, **_: object) -> None:
    line = json.dumps({"task": task.name, "args": list(args or ()), "timelimit": task.request.timelimit})
    with _lock, open(_folder() / "tasks.jsonl", "a") as f:
        f.write(line + "\n")


def _attempt(name: str) -> int:
    """Count an attempt of `name`; its number."""
    with _lock, open(_folder() / f"{name}.count", "a+") as f:
        f.write("x\n")
        f.seek(0)
        return len(f.read().splitlines())


def _dawdle(name: str, attempt: int) -> None:
    time.sleep(SLEEP)
    (_folder() / f"{name}.{attempt}.late").write_text("woke")


class Item(BaseModel):
    value: int = Field(ge=0, le=10_000)


class Mark(BaseModel):
    """Which attempt produced the output."""

    attempt: int = Field(ge=1, le=100)


@step(retry=Retry(max_attempts=1))
def prepare(item: Item) -> Item:
    return Item(value=item.value + 1)


QUICK = Retry(max_attempts=3, backoff=0.1, max_delay=0.2)


@step(timeout=TIMEOUT, retry=QUICK)
def sluggish(item: Item) -> Mark:
    """Its first two attempts sleep past the timeout; the third answers at once."""
    n = _attempt("sluggish")
    if n <= 2:
        _dawdle("sluggish", n)
    return Mark(attempt=n)


slow_twice = Pipeline("slow-twice", [prepare, sluggish])


@step(timeout=TIMEOUT, retry=Retry(max_attempts=2, backoff=0.1, max_delay=0.2))
def wobbly(item: Item) -> Mark:
    """Attempt 1 fails transiently, attempt 2 sleeps past the timeout, any later one answers at once."""
    n = _attempt("wobbly")
    if n == 1:
        raise TransientError("wobbly: the source is busy, try again")
    if n == 2:
        _dawdle("wobbly", n)
    return Mark(attempt=n)


flaky_then_slow = Pipeline("flaky-then-slow", [wobbly])


# -- a supervisor of four agents under a token budget that two of their calls fill -------------------------

# Each call holds its prompt (~150 tokens here) plus MAX_TOKENS against the budget, and the server says each
# spent SPENT: two calls fit in BUDGET, held or spent; a third never does.
MAX_TOKENS = 2000
SPENT = 2000
BUDGET = 5000
REGIONS = ("north", "south", "east", "west")


class Ask(BaseModel):
    topic: str = Field(max_length=50)


class Query(BaseModel):
    q: str = Field(max_length=50)


class Finding(BaseModel):
    text: str = Field(max_length=200)


class Plan(BaseModel):
    north: Query | None = None
    south: Query | None = None
    east: Query | None = None
    west: Query | None = None


class Found(BaseModel):
    north: Finding | None = None
    south: Finding | None = None
    east: Finding | None = None
    west: Finding | None = None


class Report(BaseModel):
    body: str = Field(max_length=1000)


@step(retry=Retry(max_attempts=1))
def assign(ask: Ask) -> Plan:
    return Plan(**{region: Query(q=ask.topic) for region in REGIONS})


def _scout(region: str) -> Agent:
    return Agent(
        region,
        instructions=f"Report what you find about the topic in the {region}.",
        input=Query,
        output=Finding,
        model="openai:gpt-4o-mini",
        max_tokens=MAX_TOKENS,
        retry=Retry(max_attempts=1),
    )


@step(retry=Retry(max_attempts=1))
def gather(found: Found) -> Report:
    return Report(body=" | ".join(f.text for f in (found.north, found.south, found.east, found.west) if f))


survey = Supervisor(
    "survey",
    router=assign,
    workers={region: _scout(region) for region in REGIONS},
    merge=gather,
    budget=Budget(tokens=BUDGET),
)


# -- an event chain under one budget: the run that emits declares it, its subscriber's agent holds against it ---


class Notice(BaseModel):
    text: str = Field(max_length=100)


@step(retry=Retry(max_attempts=1))
def announce(item: Item) -> Notice:
    notice = Notice(text=f"item {item.value}")
    emit("guarded.announced", notice)
    return notice


herald = Pipeline("herald", [announce], budget=Budget(tokens=100, chain=True))

# A pipeline of the agent, not the agent itself: `on(...)(Agent(...))` finds no importable target for
# workers (its step function is a method of baton.agents), so a celery delivery of it is refused.
reader = on("guarded.announced")(
    Pipeline(
        "reader",
        [
            Agent(
                "summarise",
                instructions="Summarise the notice.",
                input=Notice,
                output=Finding,
                model="openai:gpt-4o-mini",
                max_tokens=MAX_TOKENS,
                retry=Retry(max_attempts=1),
            )
        ],
    )
)
