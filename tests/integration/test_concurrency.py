"""Many runs in flight in one process: async steps awaited on a loop, sync steps on a pool sized by
BATON_MAX_IN_FLIGHT, the async API beside the sync one, and what cancels and SIGKILLs do to hundreds in flight.

The steps of `apps/crowd.py` wait at barriers that open only when N of them wait there together: a run that
finishes proves N steps were in flight at once in the process that executed them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import baton
from baton import RunStatus, RunStore
from baton._loader import load_target
from baton.runtime import get_runtime
from baton.settings import Settings, current_settings, use_settings
from tests.integration.commands import control
from tests.integration.workers import on_both_brokers

APP = Path(__file__).parent / "apps" / "crowd.py"
CROWD, FANOUT, ANNOUNCER = (f"{APP}:{name}" for name in ("crowd", "fanout", "announcer"))


def ledger(folder: Path) -> list[tuple[str, str]]:
    path = folder / "ledger"
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


def executions(folder: Path) -> Counter[tuple[str, str]]:
    return Counter(ledger(folder))


@pytest.fixture
def here(tmp_path, monkeypatch):
    """This process runs the crowd on the local runtime, on a SQLite store of the test's own."""
    folder = tmp_path / "control"
    folder.mkdir()
    monkeypatch.setenv("BATON_TEST_DIR", str(folder))
    store = RunStore(f"sqlite:///{tmp_path}/baton.db")
    yield store, folder
    assert get_runtime("local").drain(60)
    store.close()


def test_more_than_a_hundred_async_steps_are_in_flight_at_once_in_one_process(here, monkeypatch):
    store, folder = here
    monkeypatch.setenv("BATON_TEST_BARRIER", "150")
    crowd = load_target(CROWD)

    async def main():
        ids = [await crowd.asubmit({"value": i}, store=store) for i in range(150)]
        return await asyncio.gather(*(baton.await_run(i, store=store, timeout=90) for i in ids))

    runs = asyncio.run(main())
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 150, runs[0].steps
    assert [r.output for r in runs] == [{"value": (i + 1) * 2 + 3} for i in range(150)]
    assert set(executions(folder).values()) == {1}


def test_more_than_a_hundred_sync_steps_run_at_once_on_the_pool_the_setting_sizes(here, monkeypatch):
    store, _folder = here
    monkeypatch.setenv("BATON_TEST_BARRIER", "120")
    monkeypatch.setenv("BATON_TEST_SYNC_BARRIER", "1")
    crowd = load_target(CROWD)
    ids = [crowd.submit({"value": i}, store=store) for i in range(120)]
    runs = [baton.wait(i, store=store, timeout=90) for i in ids]
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, runs[0].steps


def test_past_the_limit_runs_wait_pending_and_start_in_the_order_they_came(here):
    store, folder = here
    crowd = load_target(CROWD)
    previous = use_settings(dataclasses.replace(current_settings(), max_in_flight=3))
    (folder / "arrive.block").touch()
    try:
        ids = [crowd.submit({"value": i}, store=store) for i in range(12)]
        deadline = time.monotonic() + 30
        while len(ledger(folder)) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # room for a fourth to start, if the limit let it
        statuses = [store.runs.get(i).status for i in ids]
        assert statuses == [RunStatus.RUNNING] * 3 + [RunStatus.PENDING] * 9
        (folder / "arrive.block").unlink()
        runs = [baton.wait(i, store=store, timeout=60) for i in ids]
    finally:
        use_settings(previous)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    started = [run_id for name, run_id in ledger(folder) if name == "arrive"]
    assert started == ids  # in the order they were submitted


def test_the_sync_and_the_async_api_work_inside_a_running_loop(here):
    store, _folder = here
    crowd = load_target(CROWD)
    seen = load_target(f"{APP}:loops_seen")  # the same module the pattern came from

    async def main():
        caller = id(asyncio.get_running_loop())
        seen.clear()
        ran = await crowd.arun({"value": 1}, store=store)  # on this loop
        on_caller = seen.pop("arrive")
        sync = crowd.run({"value": 2}, store=store)  # blocks this loop, awaits its async steps elsewhere
        elsewhere = seen.pop("arrive")
        run_id = await crowd.asubmit({"value": 3}, store=store)
        awaited = await baton.await_run(run_id, store=store, timeout=30)
        waited = baton.wait(crowd.submit({"value": 4}, store=store), store=store, timeout=30)
        return caller, ran, on_caller, sync, elsewhere, awaited, waited

    caller, ran, on_caller, sync, elsewhere, awaited, waited = asyncio.run(main())
    assert [r.status for r in (ran, sync, awaited, waited)] == [RunStatus.SUCCEEDED] * 4
    assert [r.output for r in (ran, sync, awaited, waited)] == [{"value": v} for v in (7, 9, 11, 13)]
    assert on_caller == {caller}  # arun awaits async steps on the caller's loop
    assert caller not in elsewhere  # the sync run inside a loop awaits them on baton's
    # Outside any loop, too, and never an asyncio.run per step: a script's sync run.
    assert crowd.run({"value": 5}, store=store).output == {"value": 15}


def test_a_supervisors_async_workers_run_side_by_side_and_an_async_subscriber_handles_its_event(here):
    store, _folder = here
    fanout, announcer = load_target(FANOUT), load_target(ANNOUNCER)

    async def main():
        awaited = await fanout.arun({"topic": "tides"}, store=store)  # its branches are tasks on this loop
        submitted = await baton.await_run(await fanout.asubmit({"topic": "moons"}, store=store), store=store)
        return awaited, submitted

    awaited, submitted = asyncio.run(main())
    synced = fanout.run({"topic": "winds"}, store=store)  # its branches on threads; their work on baton's loop
    for run, topic in ((awaited, "tides"), (submitted, "moons"), (synced, "winds")):
        assert run.status is RunStatus.SUCCEEDED, run.steps
        assert run.output == {"text": f"left: {topic} | middle: {topic} | right: {topic}"}
    emitted = announcer.run({"value": 7}, store=store)
    assert emitted.status is RunStatus.SUCCEEDED
    baton.wait_chain(emitted.id, store=store, timeout=30)
    handled = [r for r in store.runs.list(correlation_id=emitted.id) if r.pipeline == "note"]
    assert [(r.status, r.output) for r in handled] == [(RunStatus.SUCCEEDED, {"text": "noted item 7"})]


def test_a_cancel_with_hundreds_in_flight_stops_them_all_and_runs_nothing_twice(here):
    store, folder = here
    crowd = load_target(CROWD)
    (folder / "arrive.block").touch()
    ids = [crowd.submit({"value": i}, store=store) for i in range(200)]
    deadline = time.monotonic() + 60
    while len(ledger(folder)) < 200:
        assert time.monotonic() < deadline, len(ledger(folder))
        time.sleep(0.05)
    for run_id in ids:
        baton.cancel(run_id, store=store)
    (folder / "arrive.block").unlink()
    runs = [baton.wait(i, store=store, timeout=60) for i in ids]
    assert {r.status for r in runs} == {RunStatus.CANCELLED}
    # The step in flight finished and was checkpointed; nothing after it started, nothing ran twice.
    assert {r.step("arrive").status.value for r in runs} == {"succeeded"}
    assert executions(folder) == Counter({("arrive", i): 1 for i in ids})


KILLED = """
import asyncio, os, sys
from baton import RunStore
from baton._loader import load_target

async def main():
    store = RunStore(sys.argv[1])
    crowd = load_target(sys.argv[2])
    ids = [await crowd.asubmit({"value": i}, store=store) for i in range(int(sys.argv[3]))]
    print(" ".join(ids), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_process_sigkilled_with_hundreds_in_flight_loses_nothing_and_reruns_no_checkpointed_step(here, tmp_path):
    store, folder = here
    (folder / "hold.block").touch()  # every run stops in its second step, the first checkpointed
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, store.url, CROWD, "200"],
        env={**os.environ, "BATON_LEASE_SECONDS": "3"},
        stdout=subprocess.PIPE,
        text=True,
    )
    ids = child.stdout.readline().split()
    assert len(ids) == 200
    deadline = time.monotonic() + 60
    while sum(1 for name, _ in ledger(folder) if name == "hold") < 200:
        assert time.monotonic() < deadline, executions(folder)
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    store.runs.reap()
    before = {run_id: store.runs.get(run_id) for run_id in ids}
    assert {r.status for r in before.values()} == {RunStatus.INTERRUPTED}
    assert {r.step("arrive").status.value for r in before.values()} == {"succeeded"}
    seen_before = len(ledger(folder))
    (folder / "hold.block").unlink()
    crowd = load_target(CROWD)
    for run_id in ids:
        baton.resume_later(run_id, store=store)
    runs = [baton.wait(i, store=store, timeout=60) for i in ids]
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    assert [r.output for r in runs] == [crowd.run({"value": i}, store=store).output for i in range(200)]
    after = ledger(folder)[seen_before:]
    after = [(name, run_id) for name, run_id in after if run_id in before]
    assert not [e for e in after if e[0] == "arrive"]  # checkpointed before the kill: never again
    assert Counter(after) == Counter({(s, i): 1 for i in ids for s in ("hold", "leave")})


# -- on one celery worker --------------------------------------------------------------------------------


@pytest.fixture
def celery_here(env, workers, monkeypatch):
    """Runs submitted from this process to one `baton worker` on the threads pool."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    previous = use_settings(Settings.from_env(env))
    store = RunStore(env["BATON_DATABASE_URL"])
    yield store, control(env)
    store.close()
    use_settings(previous)


def _asubmit_all(target: str, store: RunStore, inputs: list[dict]) -> list[str]:
    pattern = load_target(target)

    async def main():
        return [await pattern.asubmit(x, store=store, runtime="celery") for x in inputs]

    return asyncio.run(main())


def _await_all(store: RunStore, ids: list[str], timeout: float = 120) -> list[baton.Run]:
    async def main():
        return await asyncio.gather(*(baton.await_run(i, store=store, timeout=timeout) for i in ids))

    return asyncio.run(main())


def test_one_celery_worker_holds_more_than_a_hundred_async_and_sync_steps_at_once(celery_here, env, workers):
    store, folder = celery_here
    env.update(BATON_TEST_BARRIER="110", BATON_TEST_SYNC_BARRIER="1")
    workers.start(concurrency=150, pool="threads")
    ids = _asubmit_all(CROWD, store, [{"value": i} for i in range(110)])
    runs = _await_all(store, ids)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [s.error for s in runs[0].steps]
    assert [r.output for r in runs] == [{"value": (i + 1) * 2 + 3} for i in range(110)]
    assert set(executions(folder).values()) == {1}


def test_async_supervisor_workers_and_an_async_subscriber_run_on_a_celery_worker(celery_here, env, workers):
    store, _folder = celery_here
    workers.start(concurrency=16, pool="threads")
    [fan] = _await_all(store, _asubmit_all(FANOUT, store, [{"topic": "tides"}]))
    assert fan.status is RunStatus.SUCCEEDED, [s.error for s in fan.steps]
    assert fan.output == {"text": "left: tides | middle: tides | right: tides"}
    [emitted] = _await_all(store, _asubmit_all(ANNOUNCER, store, [{"value": 7}]))
    assert emitted.status is RunStatus.SUCCEEDED
    baton.wait_chain(emitted.id, store=store, timeout=60)
    handled = [r for r in store.runs.list(correlation_id=emitted.id) if r.pipeline == "note"]
    assert [(r.status, r.runtime, r.output) for r in handled] == [
        (RunStatus.SUCCEEDED, "celery", {"text": "noted item 7"})
    ]


def _wait_for_ledger(folder: Path, name: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for step, _ in ledger(folder) if step == name) < n:
        assert time.monotonic() < deadline, executions(folder)
        time.sleep(0.05)


@on_both_brokers
def test_a_celery_worker_sigkilled_with_hundreds_in_flight_loses_nothing(celery_here, env, workers):
    store, folder = celery_here
    (folder / "leave.block").touch()
    first = workers.start(concurrency=200, pool="threads")
    ids = _asubmit_all(CROWD, store, [{"value": i} for i in range(150)])
    _wait_for_ledger(folder, "leave", 150)
    workers.kill(first)
    checkpointed = {(s.name, r) for r in ids for s in store.runs.get(r).steps if s.status.value == "succeeded"}
    assert {name for name, _ in checkpointed} == {"arrive", "hold"}
    seen_before = len(ledger(folder))
    (folder / "leave.block").unlink()
    workers.start(concurrency=200, pool="threads")  # the broker gives the lost steps to this one
    runs = _await_all(store, ids)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    assert [r.output for r in runs] == [{"value": (i + 1) * 2 + 3} for i in range(150)]
    after = ledger(folder)[seen_before:]
    assert not [e for e in after if e in checkpointed]
    assert Counter(after) == Counter({("leave", i): 1 for i in ids})


def test_a_cancel_with_hundreds_in_flight_on_a_celery_worker(celery_here, env, workers):
    store, folder = celery_here
    (folder / "arrive.block").touch()
    workers.start(concurrency=200, pool="threads")
    ids = _asubmit_all(CROWD, store, [{"value": i} for i in range(150)])
    _wait_for_ledger(folder, "arrive", 150)
    for run_id in ids:
        baton.cancel(run_id, store=store)
    (folder / "arrive.block").unlink()
    runs = _await_all(store, ids)
    assert {r.status for r in runs} == {RunStatus.CANCELLED}
    assert {r.step("arrive").status.value for r in runs} == {"succeeded"}
    assert executions(folder) == Counter({("arrive", i): 1 for i in ids})


EXITS = """
import os, sys, threading, time
from pydantic import BaseModel
from baton import Pipeline, RunStore, step

class N(BaseModel):
    n: int

threads = set()
gate, inside = threading.Event(), threading.Semaphore(0)

@step
def slow(x: N) -> N:
    threads.add(threading.current_thread().name)
    if x.n < 100:
        inside.release()
        gate.wait()  # holds no lock while it waits: the fork below cannot inherit one held
    time.sleep(0.1)
    return N(n=x.n + 1)

flow = Pipeline("exits", [slow])
store = RunStore(sys.argv[1])
ids = [flow.submit({"n": i}, store=store) for i in range(20)]
for _ in range(5):
    inside.acquire()  # as many runs in flight as the limit lets, the others pending
time.sleep(0.2)
if sys.argv[2] == "fork":
    child = os.fork()
    if child == 0:  # a child that submits a run of its own and ends: it waits for that one only
        flow.submit({"n": 100}, store=RunStore(sys.argv[1]))  # (a connection is not shared across a fork)
        sys.exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0, status
gate.set()

import atexit
atexit.register(lambda: print("threads", len(threads), flush=True))
print(" ".join(ids), flush=True)
"""


@pytest.mark.parametrize("how", ["exit", "fork"])
def test_a_script_that_submits_runs_and_ends_waits_for_them_on_a_bounded_pool(tmp_path, how):
    url = f"sqlite:///{tmp_path}/baton.db"
    done = subprocess.run(
        [sys.executable, "-c", EXITS, url, how],
        env={**os.environ, "BATON_MAX_IN_FLIGHT": "5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    ids = lines[0].split()
    # The sync steps of 20 runs ran on at most BATON_MAX_IN_FLIGHT threads.
    assert 1 <= int(lines[1].split()[1]) <= 5
    store = RunStore(url)
    try:
        runs = [store.runs.get(i) for i in ids]
        assert [(r.status, r.output) for r in runs] == [(RunStatus.SUCCEEDED, {"n": i + 1}) for i in range(20)]
        if how == "fork":
            assert len(store.runs.list(limit=100)) == 21
            assert {r.status for r in store.runs.list(limit=100)} == {RunStatus.SUCCEEDED}
    finally:
        store.close()


def test_the_sync_api_called_from_an_async_step_on_batons_loop_says_to_await(here):
    store, _folder = here
    inner, item = load_target(CROWD), load_target(f"{APP}:Item")
    from baton import Pipeline, Step

    async def nested(box):
        return item(value=inner.run({"value": box.value}, store=store).output["value"])

    outer = Pipeline("nests-a-sync-run", [Step("nested", nested, input=item, output=item)])
    run = baton.wait(outer.submit({"value": 1}, store=store), store=store, timeout=30)
    assert run.status is RunStatus.FAILED
    assert "await crowd.arun()" in run.steps[0].error.message
