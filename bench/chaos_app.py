"""The 4-step pipeline that `chaos.py` runs under faults: fetch -> transform -> deliver (a side effect) -> finish.

A module of its own so that the workers and `baton serve` import the same pipeline (`--import
bench/chaos_app.py`). Each step sleeps 50-300 ms (two of them on the event loop, two on a thread), so that a
kill lands mid-step, and notes what it did in files of the benchmark's own (`CHAOS_DIR`), outside the store
and untouched by the faults:

- `executions.log`: a line when an execution of a step begins and one when its body returns (run id, step
  index, baton's attempt number, process id, a token unique to the execution, the time). Each step's output
  carries its token in `trail`, so the store's checkpoint names the execution it kept.
- `effects.log`: a line each time `deliver`'s effect acts (its idempotency key): the world the effect acts on.
  A key written twice is an effect done twice.

Lines are appended with one `write` on an `O_APPEND` descriptor, whole even when processes append at once
and kept when a process is SIGKILLed right after (they are in the kernel's page cache).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from baton import Pipeline, effect, step
from baton._context import current_step  # the benchmark's instrument: which run, step and attempt this is

PIPELINE_NAME = "bench-chaos"
EXECUTIONS, EFFECTS = "executions.log", "effects.log"
STEP_SECONDS = (0.05, 0.3)


class Work(BaseModel):
    n: int = Field(ge=0)
    # The token of each execution whose output was checkpointed, step after step.
    trail: list[str] = Field(default_factory=list, max_length=4)


class Receipt(BaseModel):
    key: str


def _append(name: str, record: dict[str, Any]) -> None:
    path = Path(os.environ["CHAOS_DIR"]) / name
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


def _note(event: str, token: str) -> None:
    ctx = current_step()
    assert ctx is not None, "a step of a run is being executed"
    record = {"ev": event, "run": ctx.run_id, "idx": ctx.idx, "attempt": ctx.attempt, "pid": os.getpid()}
    _append(EXECUTIONS, record | {"token": token, "t": time.time()})


def _begin() -> str:
    token = uuid.uuid4().hex[:12]
    _note("start", token)
    return token


def _done(work: Work, token: str) -> Work:
    _note("end", token)
    return Work(n=work.n, trail=[*work.trail, token])


def _pause() -> float:
    return random.uniform(*STEP_SECONDS)


@step
async def fetch(work: Work) -> Work:
    token = _begin()
    await asyncio.sleep(_pause())
    return _done(work, token)


@step
def transform(work: Work) -> Work:
    token = _begin()
    time.sleep(_pause())
    return _done(work, token)


def _act(key: str) -> dict[str, str]:
    """The effect on the world: a line in the benchmark's ledger."""
    _append(EFFECTS, {"key": key, "pid": os.getpid(), "t": time.time()})
    return {"key": key}


@step(side_effect=True)
def deliver(work: Work) -> Work:
    token = _begin()
    pause = _pause()
    time.sleep(pause / 2)
    try:
        effect("ledger", _act, returns=Receipt)
    except BaseException:
        _note("end", token)  # the effect raised (uncertain, or in progress elsewhere): this execution is over
        raise
    time.sleep(pause / 2)
    return _done(work, token)


@step
async def finish(work: Work) -> Work:
    token = _begin()
    await asyncio.sleep(_pause())
    return _done(work, token)


PIPELINE = Pipeline(PIPELINE_NAME, [fetch, transform, deliver, finish])
