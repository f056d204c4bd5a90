"""Module-level conveniences: `baton.run`, `baton.submit`, `baton.resume`, `baton.cancel`, `baton.get_run`."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from baton.budgets import Budget, rebudget
from baton.errors import RunError, RunNotResumable
from baton.patterns.registry import find_pattern
from baton.run import Run
from baton.runtime import get_runtime
from baton.runtime.aio import refuse_on_own_loop
from baton.runtime.base import await_for, wait_for
from baton.status import RunStatus
from baton.store import RunStore, open_store

__all__ = [
    "approve",
    "arun",
    "asubmit",
    "await_run",
    "cancel",
    "get_run",
    "reject",
    "resume",
    "resume_later",
    "run",
    "submit",
    "wait",
    "wait_chain",
]


def _store(store: RunStore | str | None) -> RunStore:
    return store if isinstance(store, RunStore) else open_store(store)


def run(pattern: Any, input: BaseModel | dict[str, Any] | str, **options: Any) -> Run:
    """Run `pattern` to the end on `input`; the same as `pattern.run(input)`."""
    return pattern.run(input, **options)


def submit(pattern: Any, input: BaseModel | dict[str, Any] | str, **options: Any) -> str:
    """Start `pattern` on `input` and return the run id at once; the same as `pattern.submit(input)`."""
    return pattern.submit(input, **options)


def resume(run_id: str, *, store: RunStore | str | None = None, **options: Any) -> Run:
    """Continue a failed or interrupted run at its first unfinished step, finding its pattern by name, and
    wait until it stops again (`resume_later` returns at once)."""
    s = _store(store)
    recorded = s.runs.get(run_id)
    pattern = find_pattern(recorded.pipeline, recorded.target)
    return pattern.resume(recorded.id, store=s, **options)


def resume_later(
    run_id: str, *, store: RunStore | str | None = None, runtime: str | None = None, budget: Budget | None = None
) -> str:
    """Continue a failed or interrupted run on its own runtime (or `runtime`), under `budget` if given (it
    replaces the run's); returns its id at once."""
    s = _store(store)
    recorded = s.runs.get(run_id)
    pattern = find_pattern(recorded.pipeline, recorded.target)
    rebudget(s, recorded, budget, f"resume of run {recorded.id}")
    return get_runtime(runtime or recorded.runtime).resume(s, pattern, recorded.id)


def approve(run_id: str, *, store: RunStore | str | None = None, wait: bool = False) -> str:
    """Approve a run awaiting approval: it goes on at the step it waited before, on its own runtime.

    Returns its id at once, or, with `wait`, when it stops again (a local run executes in this process).
    """
    s = _store(store)
    recorded = s.runs.get(run_id)
    if recorded.status is not RunStatus.AWAITING_APPROVAL:
        raise RunNotResumable(f"run {recorded.id} is {recorded.status.value}, not awaiting approval")
    pattern = find_pattern(recorded.pipeline, recorded.target)
    get_runtime(recorded.runtime).approve(s, pattern, recorded.id)
    if wait:
        wait_for(s, recorded.id)
    return recorded.id


def reject(run_id: str, *, reason: str = "", store: RunStore | str | None = None) -> Run:
    """Reject a run awaiting approval: it ends cancelled, and the waiting step's history keeps the reason."""
    from baton.store import utcnow

    s = _store(store)
    recorded = s.runs.get(run_id)
    if s.steps.decide(recorded.id, approve=False, now=utcnow(), runtime=recorded.runtime, why=reason) < 0:
        raise RunNotResumable(f"run {recorded.id} is {recorded.status.value}, not awaiting approval")
    return s.runs.get(recorded.id)


def cancel(run_id: str, *, store: RunStore | str | None = None) -> RunStatus:
    """Cancel a run: at once when idle, after its current step when running. Returns its status now."""
    return _store(store).runs.cancel(run_id)


def get_run(run_id: str, *, store: RunStore | str | None = None) -> Run:
    """The recorded run `run_id` (a unique prefix will do), with every step; interrupted if its owner is gone."""
    s = _store(store)
    s.runs.reap(run_id)
    return s.runs.get(run_id)


def wait(run_id: str, *, store: RunStore | str | None = None, timeout: float | None = None, poll: float = 0.05) -> Run:
    """Wait until a run stops running (succeeded, failed, interrupted or cancelled) and return it.

    It watches the store, not a runtime's own results, so it works the same for every runtime.
    """
    return wait_for(_store(store), run_id, timeout=timeout, poll=poll)


async def await_run(
    run_id: str, *, store: RunStore | str | None = None, timeout: float | None = None, poll: float = 0.05
) -> Run:
    """`wait` for async code: await until a run stops running and return it, without blocking the loop.

    Many runs awaited at once on one loop are watched together, one read of the store a poll.
    """
    return await await_for(_store(store), run_id, timeout=timeout, poll=poll)


async def arun(pattern: Any, input: BaseModel | dict[str, Any] | str, **options: Any) -> Run:
    """`run` for async code; the same as `await pattern.arun(input)`."""
    return await pattern.arun(input, **options)


async def asubmit(pattern: Any, input: BaseModel | dict[str, Any] | str, **options: Any) -> str:
    """`submit` for async code; the same as `await pattern.asubmit(input)`."""
    return await pattern.asubmit(input, **options)


def wait_chain(
    correlation_id: str, *, store: RunStore | str | None = None, timeout: float | None = None, poll: float = 0.05
) -> None:
    """Wait until every run of a chain (a correlation id) has stopped and none of its events waits to be
    delivered: what an event-driven flow started by one run or one published event has become."""
    refuse_on_own_loop("baton.wait_chain()", "await baton.await_run() on the chain's runs")
    s = _store(store)
    deadline = None if timeout is None else time.monotonic() + timeout
    while s.events.chain_busy(correlation_id):
        if deadline is not None and time.monotonic() >= deadline:
            raise RunError(f"chain {correlation_id} is still going after {timeout} s")
        time.sleep(poll)
