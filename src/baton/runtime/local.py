"""The local runtime: steps execute in this process, one after the other, checkpointed as they go."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from pydantic import BaseModel

from baton._owner import this_owner
from baton.contracts import validate_json
from baton.errors import RunNotResumable
from baton.run import Run
from baton.runtime.executor import Failed, Observer, RetryLater, Succeeded, execute_attempt
from baton.status import RunStatus, StepStatus
from baton.steps import Step
from baton.store import LostOwnership, RunStore

__all__ = ["LocalRuntime", "plan_resume"]


class _Heartbeat:
    """Keeps the lease of this process's running runs fresh while their steps take their time."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.owner = this_owner()
        self.active: set[str] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, run_id: str) -> None:
        with self.lock:
            self.active.add(run_id)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="baton-heartbeat", daemon=True)
                self.thread.start()

    def discard(self, run_id: str) -> None:
        with self.lock:
            self.active.discard(run_id)

    def _loop(self) -> None:
        interval = max(1.0, self.store.lease.total_seconds() / 3)
        while True:
            time.sleep(interval)
            with self.lock:
                ids = list(self.active)
            try:
                self.store.heartbeat(self.owner, ids)
            except Exception:  # a database hiccup must not kill the heartbeat; the next beat tries again
                continue


_heartbeats: dict[int, _Heartbeat] = {}
_heartbeats_lock = threading.Lock()


def _heartbeat_for(store: RunStore) -> _Heartbeat:
    with _heartbeats_lock:
        beat = _heartbeats.get(id(store))
        if beat is None:
            beat = _heartbeats[id(store)] = _Heartbeat(store)
        return beat


class LocalRuntime:
    """Runs a pipeline's steps in this process; `submit` runs them on a background thread."""

    name = "local"

    def __init__(self, max_workers: int = 4) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._max_workers = max_workers
        self._futures: dict[str, Future[Run]] = {}

    def start(
        self,
        store: RunStore,
        run_id: str,
        steps: Sequence[Step],
        value: BaseModel,
        *,
        start_idx: int = 0,
        first_attempt: int = 1,
        replace_first: bool = False,
        observer: Observer | None = None,
    ) -> Run:
        """Execute `steps` from `start_idx` on `value`, for a run this process has already claimed."""
        owner = this_owner()
        beat = _heartbeat_for(store)
        beat.add(run_id)
        try:
            self._loop(store, run_id, owner, steps, value, start_idx, first_attempt, replace_first, observer)
        except LostOwnership:
            pass  # someone else declared the run interrupted or took it over; the store says what happened
        except BaseException as exc:
            # Ctrl-C or a dying interpreter: leave the run resumable instead of "running" forever.
            _abandon(store, run_id, owner, exc)
            raise
        finally:
            beat.discard(run_id)
        return store.get_run(run_id)

    def _loop(
        self,
        store: RunStore,
        run_id: str,
        owner: str,
        steps: Sequence[Step],
        value: BaseModel,
        start_idx: int,
        first_attempt: int,
        replace_first: bool,
        observer: Observer | None,
    ) -> None:
        last = len(steps) - 1
        for idx in range(start_idx, len(steps)):
            step = steps[idx]
            attempt = first_attempt if idx == start_idx else 1
            replace = replace_first and idx == start_idx
            this_go = 1
            while True:
                if observer:
                    observer.step_started(run_id, idx, step.name, attempt)
                t0 = time.perf_counter()
                outcome = execute_attempt(
                    store, run_id, owner, step, idx, value,
                    attempt=attempt, attempts_this_go=this_go, replace=replace,
                    next_idx=idx + 1 if idx < last else None,
                )  # fmt: skip
                if observer:
                    observer.step_finished(run_id, idx, step.name, outcome, time.perf_counter() - t0)
                if isinstance(outcome, RetryLater):
                    time.sleep(outcome.delay)
                    attempt, this_go = outcome.next_attempt, this_go + 1
                    store.start_attempt(run_id, owner, attempt)
                    continue
                break
            if isinstance(outcome, Failed):
                return
            assert isinstance(outcome, Succeeded)
            value = outcome.value
            if outcome.cancel_requested and idx < last:
                store.finish_cancelled(run_id, owner)
                return

    def submit(self, fn: object, run_id: str) -> None:
        """Start `fn` (a zero-argument callable returning the Run) on a background thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="baton-run")
        self._futures[run_id] = self._pool.submit(fn)  # type: ignore[arg-type]

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Wait for a run submitted by this runtime to end, and return it."""
        return self._futures[run_id].result(timeout)


def _abandon(store: RunStore, run_id: str, owner: str, exc: BaseException) -> None:
    try:
        store.reap_owned(run_id, owner, f"the run stopped: {type(exc).__name__}")
    except Exception:
        pass  # the process is going down anyway; the reaper will find the run by its dead owner


def plan_resume(store: RunStore, run: Run, steps: Sequence[Step]) -> tuple[int, BaseModel, int, bool]:
    """Where a run goes on: (first unfinished step, its input, its next attempt number, row exists)."""
    recorded = [s.name for s in run.steps]
    current = [s.name for s in steps]
    if recorded != current:
        raise RunNotResumable(
            f"run {run.id} cannot resume: it recorded steps {recorded}, but pipeline '{run.pipeline}' now has "
            f"{current}. Its code changed; start a new run instead."
        )
    if run.status is RunStatus.SUCCEEDED:
        raise RunNotResumable(f"run {run.id} already succeeded; there is nothing to resume")
    if run.status is RunStatus.CANCELLED:
        raise RunNotResumable(f"run {run.id} was cancelled; start a new run instead")
    if run.status is RunStatus.RUNNING:
        raise RunNotResumable(f"run {run.id} is running in another process; cancel it first or wait")
    idx = next(i for i, s in enumerate(run.steps) if s.status is not StepStatus.SUCCEEDED)
    if idx == 0:
        value = validate_json(steps[0].input, _dump(run.input), step=steps[0].name, where="recorded run input")
    else:
        prev = run.steps[idx - 1]
        # Replay the checkpoint: it must still satisfy the contracts on both sides of the boundary.
        raw = _dump(prev.output)
        validate_json(steps[idx - 1].output, raw, step=prev.name, where="checkpoint")
        value = validate_json(steps[idx].input, raw, step=steps[idx].name, where="input (replayed checkpoint)")
    record = run.steps[idx]
    return idx, value, record.attempts + 1, record.status is not StepStatus.PENDING


def _dump(value: object) -> str:
    return json.dumps(value)
