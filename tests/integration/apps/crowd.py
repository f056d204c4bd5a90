"""Many runs in flight at once in one process, for the concurrency tests.

Steps wait at barriers that open only when `BATON_TEST_BARRIER` of them wait there together, so a run that
finishes proves that many were in flight at once in the process that ran them. Async steps share their loop's
barrier; sync ones a thread barrier.

BATON_TEST_DIR: each step appends "<step> <run id>" to `ledger` when it starts.
BATON_TEST_BARRIER: how many must wait at a barrier together before it opens (0 or unset: no barrier).
BATON_TEST_SYNC_BARRIER=1: the sync step `hold` waits at a thread barrier too.
`<step>.block` in BATON_TEST_DIR: the step waits until the file is gone (an async step without blocking its loop).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel, Field

from baton import Pipeline, Retry, Supervisor, emit, on, step
from baton._context import current_step

ONCE = Retry(max_attempts=1)
BARRIER_TIMEOUT = 60.0

_lock = threading.Lock()
_events: dict[tuple[int, str], tuple[asyncio.Event, list[int]]] = {}
_thread_barriers: dict[str, threading.Barrier] = {}
# What ran where, for the in-process tests: step name -> the loops its async work ran on.
loops_seen: dict[str, set[int]] = {}


def _folder() -> Path:
    return Path(os.environ["BATON_TEST_DIR"])


def _wanted() -> int:
    return int(os.environ.get("BATON_TEST_BARRIER") or 0)


def _note(name: str) -> None:
    ctx = current_step()
    with _lock, open(_folder() / "ledger", "a") as ledger:
        ledger.write(f"{name} {ctx.run_id if ctx else '-'}\n")


async def _barrier(name: str, n: int) -> None:
    """Wait until `n` callers on this loop wait here (the key includes the test's folder)."""
    key = (id(asyncio.get_running_loop()), f"{name}:{_folder()}")
    with _lock:
        event, count = _events.setdefault(key, (asyncio.Event(), [0]))
        count[0] += 1
        if count[0] >= n:
            event.set()
    await asyncio.wait_for(event.wait(), BARRIER_TIMEOUT)


def _thread_barrier(name: str, n: int) -> None:
    with _lock:
        barrier = _thread_barriers.setdefault(f"{name}:{_folder()}", threading.Barrier(n))
    barrier.wait(BARRIER_TIMEOUT)


async def _ablock(name: str) -> None:
    while (_folder() / f"{name}.block").exists():
        await asyncio.sleep(0.05)


class Item(BaseModel):
    value: int = Field(ge=0, le=1_000_000)


@step(retry=ONCE)
async def arrive(item: Item) -> Item:
    _note("arrive")
    loops_seen.setdefault("arrive", set()).add(id(asyncio.get_running_loop()))
    await _ablock("arrive")
    if _wanted():
        await _barrier("arrive", _wanted())
    return Item(value=item.value + 1)


@step(retry=ONCE)
def hold(item: Item) -> Item:
    _note("hold")
    while (_folder() / "hold.block").exists():
        time.sleep(0.05)
    if _wanted() and os.environ.get("BATON_TEST_SYNC_BARRIER"):
        _thread_barrier("hold", _wanted())
    return Item(value=item.value * 2)


@step(retry=ONCE)
async def leave(item: Item) -> Item:
    _note("leave")
    await _ablock("leave")
    return Item(value=item.value + 3)


crowd = Pipeline("crowd", [arrive, hold, leave])


# -- a supervisor whose workers are async and wait for each other: its branches run side by side -------------


class Ask(BaseModel):
    topic: str = Field(max_length=50)


class Query(BaseModel):
    q: str = Field(max_length=50)


class Finding(BaseModel):
    text: str = Field(max_length=100)


class Plan(BaseModel):
    left: Query | None = None
    right: Query | None = None
    middle: Query | None = None


class Found(BaseModel):
    left: Finding | None = None
    right: Finding | None = None
    middle: Finding | None = None


class Summary(BaseModel):
    text: str = Field(max_length=400)


@step(retry=ONCE)
async def route(ask: Ask) -> Plan:
    _note("route")
    await asyncio.sleep(0)
    return Plan(left=Query(q=ask.topic), right=Query(q=ask.topic), middle=Query(q=ask.topic))


def _branch(name: str):
    @step(name=name, retry=ONCE)
    async def body(query: Query) -> Finding:
        _note(name)
        ctx = current_step()
        # The three branches of one run meet here: they are in flight together.
        await _barrier(f"fan-{ctx.run_id if ctx else ''}", 3)
        return Finding(text=f"{name}: {query.q}")

    return body


@step(retry=ONCE)
async def stitch(found: Found) -> Summary:
    _note("stitch")
    parts = [f.text for f in (found.left, found.middle, found.right) if f is not None]
    return Summary(text=" | ".join(parts))


fanout = Supervisor("fanout", router=route, workers={n: _branch(n) for n in ("left", "right", "middle")}, merge=stitch)


# -- an event chain of async steps: announce emits, note handles it ---------------------------------------


class Notice(BaseModel):
    text: str = Field(max_length=100)


@step(retry=ONCE)
async def announce(item: Item) -> Notice:
    _note("announce")
    await asyncio.sleep(0)
    notice = Notice(text=f"item {item.value}")
    emit("crowd.announced", notice)
    return notice


@on("crowd.announced")
@step(retry=ONCE)
async def note(notice: Notice) -> Notice:
    _note("note")
    await asyncio.sleep(0)
    return Notice(text=f"noted {notice.text}")


announcer = Pipeline("announcer", [announce])
