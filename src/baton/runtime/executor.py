"""Executing one attempt of one step: the code path every runtime shares.

An `Attempt` is one value; `aexecute` runs it, validates the output at the boundary, and writes the
checkpoint (with the events the step emitted) or the failure. Hooks (`baton.runtime.base.hooks`) are told
what was emitted and may wrap the work (a span, a budget); the runtime decides what comes next.

It is one coroutine, run in one of two modes: `OnLoop`, on an event loop many runs share (sync work goes to
threads, nothing blocks the loop), or `Here`, in a plain thread that waits for it (`execute`, which drives the
coroutine without a loop: nothing in it suspends).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from baton._context import StepContext, enter, leave
from baton.contracts import validate_output
from baton.errors import ContractViolation
from baton.run import ErrorInfo
from baton.runtime.aio import call_in_background, in_store_thread, in_work_thread
from baton.runtime.base import hooks
from baton.runtime.timeouts import timed_here, timed_on_loop
from baton.steps import Step
from baton.store import LostOwnership, RunStore, RunWriter, StepResult, utcnow
from baton.store.trouble import Patience, is_store_trouble
from baton.tokens import count_tokens

__all__ = [
    "Attempt", "Failed", "Here", "Mode", "OnLoop", "Outcome", "RetryLater", "Succeeded", "aexecute", "drive",
    "error_info", "execute", "pause",
]  # fmt: skip

T = TypeVar("T")

log = logging.getLogger("baton.runtime")


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The step's output was validated and checkpointed."""

    value: BaseModel
    cancel_requested: bool
    result: StepResult  # holds the checkpointed JSON as `output_json`
    called_models: bool
    emitted: tuple[str, ...] = ()  # ids of the events the checkpoint wrote, for the runtime to dispatch


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A transient failure: try again after `delay` seconds (as attempt `next_attempt`)."""

    delay: float
    next_attempt: int
    error: ErrorInfo
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """The step failed for good; the step and the run are recorded failed."""

    error: ErrorInfo


Outcome = Succeeded | RetryLater | Failed


def error_info(exc: BaseException) -> ErrorInfo:
    """Type, message and traceback of an exception (and a model's raw answer), as the store keeps them."""
    kind = type(exc)
    builtin = kind.__module__ in ("builtins",) or kind.__module__.startswith("baton.")
    name = kind.__qualname__ if builtin else f"{kind.__module__}.{kind.__qualname__}"
    # A model's answer rides on a contract violation, or on what an agent's `finish` raised about it.
    raw = getattr(exc, "raw_output", None)
    raw = raw if isinstance(raw, str) else None
    details = tuple(exc.errors) if isinstance(exc, ContractViolation) else None
    return ErrorInfo(
        type=name,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        raw_output=raw,
        validation_errors=details,
    )


@dataclass(slots=True)
class Attempt:
    """One attempt of one step of one run: everything the executor needs, as one value."""

    run_id: str
    step: Step
    idx: int
    value: BaseModel  # the step's validated input
    number: int  # the step's attempt number over the run's whole life
    this_go: int  # the attempts since the run was (re)started: what the step's Retry limits
    owner: str  # who holds the run (a process, or CELERY_OWNER for a celery run's steps)
    runtime: str
    final: bool = False  # its checkpoint ends the run succeeded, in the same transaction
    measure: bool = False  # count the tokens of its output's JSON (a model writes or reads it)
    ends_run: bool = True  # a failure ends the run (a parallel branch's is judged by the plan instead)
    lease_owner: str | None = None  # the worker holding the step's lease, which fences every write

    def next(self, number: int) -> Attempt:
        """The attempt after this one, numbered `number`."""
        return replace(self, number=number, this_go=self.this_go + 1)


class Here:
    """How an attempt runs when its caller is a plain thread (a script's `run`, a Celery worker's task): sync
    work and store writes right here; an async step on the background loop, this thread waiting for it.

    Nothing it awaits ever suspends, so a coroutine of the executor runs to its end in one `drive()`.
    """

    __slots__ = ("store", "writer")
    on_loop = False

    def __init__(self, store: RunStore, writer: RunWriter) -> None:
        self.store, self.writer = store, writer

    async def work(self, step: Step, value: BaseModel) -> Any:
        """The step's work on `value`."""
        if step.is_async:
            return call_in_background(_in_context(step.fn(value), contextvars.copy_context()))
        return step.fn(value)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call, the store's trouble waited out."""
        try:
            return fn(*args)
        except Exception as exc:
            if not is_store_trouble(exc):
                raise
            return await _patiently(self, exc, lambda: _now(fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """A call of the hot-path writer, `fn(writer, *args)`, the store's trouble waited out."""
        try:
            return fn(self.writer, *args)
        except Exception as exc:
            if not is_store_trouble(exc):
                raise
            return await _patiently(self, exc, lambda: _now(self._renewed_write, fn, *args))

    def _renewed_write(self, fn: Callable[..., T], *args: Any) -> T:
        if self.writer.broken():
            self.writer.renew()
        return fn(self.writer, *args)

    async def anyway(self, fn: Callable[..., Any], *args: Any) -> None:
        """A store call that must be tried while something else goes wrong; it never raises."""
        with contextlib.suppress(Exception):
            fn(*args)

    async def sleep(self, seconds: float) -> None:
        """Wait before a retry."""
        pause(seconds)


class OnLoop:
    """How an attempt runs on an event loop shared by many runs: async work awaited on it, sync work on the
    work threads, store calls on the store's threads, so that nothing blocks the loop."""

    __slots__ = ("store",)
    on_loop = True

    def __init__(self, store: RunStore) -> None:
        self.store = store

    async def work(self, step: Step, value: BaseModel) -> Any:
        """The step's work on `value`."""
        if step.is_async:
            return await step.fn(value)
        return await in_work_thread(step.fn, value)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call, on the store's threads, the store's trouble waited out."""
        store = self.store
        try:
            return await in_store_thread(store, fn, *args)
        except Exception as exc:
            if not is_store_trouble(exc):
                raise
            return await _patiently(self, exc, lambda: in_store_thread(store, fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """A call of the hot-path writer of the store thread that makes it, the store's trouble waited out."""
        store = self.store

        def call() -> T:
            return fn(store.kept_writer(), *args)  # a broken connection is replaced here

        try:
            return await in_store_thread(store, call)
        except Exception as exc:
            if not is_store_trouble(exc):
                raise
            return await _patiently(self, exc, lambda: in_store_thread(store, call))

    async def anyway(self, fn: Callable[..., Any], *args: Any) -> None:
        """A store call that must be tried while something else goes wrong (the task being cancelled
        included: it is shielded); it never raises."""
        with contextlib.suppress(BaseException):
            await asyncio.shield(in_store_thread(self.store, fn, *args))

    async def sleep(self, seconds: float) -> None:
        """Wait before a retry, letting every other run go on."""
        await asyncio.sleep(seconds)


Mode = Here | OnLoop


async def _now(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


async def _patiently(mode: Mode, first: Exception, call: Callable[[], Awaitable[T]]) -> T:
    """Make a store call again until the store answers, after `first` said it is in trouble (a restart, a
    lost connection), as `Patience` schedules it; waiting in the mode's way (a loop goes on meanwhile).

    Safe to repeat: every write is fenced on who holds the run or the step, and a checkpoint that did commit
    before its connection broke is recognised as such (see `aexecute`).
    """
    patience = Patience(str(mode.store.engine.url), first)
    while True:
        await mode.sleep(patience.wait())
        try:
            result = await call()
        except Exception as again:
            if not is_store_trouble(again):
                raise
            patience.failed(again)
            continue
        patience.recovered()
        return result


def pause(seconds: float) -> None:
    """Wait before a retry in a plain thread (a function of its own so that tests can see the waits)."""
    time.sleep(seconds)


async def _in_context(coro: Coroutine[Any, Any, T], ctx: contextvars.Context) -> T:
    # An async step awaited on the background loop for a thread sees that thread's step context.
    task = asyncio.get_running_loop().create_task(coro, context=ctx)
    return await task


async def _write_calls_anyway(mode: Mode, attempt: Attempt, calls: list[Any]) -> None:
    """Record model calls the attempt made when it cannot checkpoint: never raises, whatever is going wrong."""
    if calls:
        await mode.anyway(mode.store.steps.record_calls, attempt.run_id, attempt.idx, attempt.number, calls)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the core that never suspends (its mode is `Here`) to its end, in this thread."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a coroutine run with the Here mode suspended: it awaited something only a loop can run")


def execute(store: RunStore, writer: RunWriter, attempt: Attempt) -> Outcome:
    """Run `attempt` in this thread and record what happened (see `aexecute`)."""
    return drive(aexecute(Here(store, writer), attempt))


async def aexecute(mode: Mode, attempt: Attempt) -> Outcome:
    """Run `attempt`, validate its output, and record what happened (a checkpoint, or the failure).

    Emitted events are written with the checkpoint and reported through `hooks` (see `baton.runtime.base`).
    """
    store = mode.store
    step, idx, run_id = attempt.step, attempt.idx, attempt.run_id
    started = utcnow()
    ctx = StepContext(run_id=run_id, step=step.name, idx=idx, attempt=attempt.number)
    # Calls a step's agents write before its checkpoint wait out the store's trouble, as the checkpoint does.
    ctx.record = lambda calls: store.patiently(store.steps.record_calls, run_id, idx, attempt.number, calls)
    if mode.on_loop:
        ctx.arecord = lambda calls: mode.write(RunWriter.record_calls, run_id, idx, attempt.number, calls)
    else:  # an async agent of a Here attempt runs on the background loop: it writes off that loop too
        ctx.arecord = lambda calls: in_store_thread(
            store, store.patiently, store.steps.record_calls, run_id, idx, attempt.number, calls
        )
    ctx.store = store
    ctx.side_effect = step.side_effect
    ctx.runtime = attempt.runtime
    ctx.timeout = step.timeout
    token = enter(ctx)
    try:
        try:
            if hooks.wrapping:
                with contextlib.ExitStack() as around:
                    for wrapper in hooks.wrappers(attempt):
                        around.enter_context(wrapper)
                    produced = await _work(mode, step, attempt.value, ctx)
            else:  # the hot path: nothing wraps an attempt unless a hook asked to
                produced = await _work(mode, step, attempt.value, ctx)
        except ValidationError as exc:
            # The step built a contract that breaks its bounds (`return Letter(body=...)`): that is the
            # boundary failing, and it must say so, naming the step.
            where = "output" if exc.title == step.output.__name__ else f"a {exc.title} it built"
            raise ContractViolation.from_validation_error(exc, contract=exc.title, step=step.name, where=where) from exc
        output, output_json = validate_output(step.output, produced, step=step.name)
    except BaseException as exc:
        # The calls made were paid for, whatever happens to the attempt (cancelled, or Ctrl-C, included).
        await _write_calls_anyway(mode, attempt, ctx.unwritten)
        if not isinstance(exc, Exception):
            raise
        return await _failed(mode, attempt, exc, started, recount=bool(ctx.calls))
    finally:
        leave(token)
    result = StepResult(
        idx=idx, name=step.name, attempt=attempt.number, started_at=started, finished_at=utcnow(),
        output_json=output_json,
    )  # fmt: skip
    written = functools.partial(
        RunWriter.checkpoint,
        run_id=run_id,
        owner=attempt.owner,
        idx=idx,
        name=step.name,
        attempt=attempt.number,
        output_json=output_json,
        started_at=result.started_at,
        finished_at=result.finished_at,
        final_output=output_json if attempt.final else None,
        recount=bool(ctx.calls),
        boundary_tokens=count_tokens(output_json) if attempt.measure else None,
        lease_owner=attempt.lease_owner,
        events=ctx.events,
        calls=ctx.unwritten,  # in the checkpoint's transaction: a step's one call costs no write of its own
    )
    tries = 0

    def write(writer: RunWriter) -> bool:
        nonlocal tries
        tries += 1
        # Made again after the store's trouble: the first may have committed before its connection broke,
        # and must not be written twice (its calls, its events).
        if tries > 1 and store.steps.checkpointed(run_id, idx, attempt.number):
            return False
        return written(writer)

    try:
        cancel = await _checkpoint(mode, attempt, write, ctx.unwritten)
    except LostOwnership:
        if not await mode.db(store.steps.checkpointed, run_id, idx, attempt.number):
            await _write_calls_anyway(mode, attempt, ctx.unwritten)
            raise
        cancel = False  # it did commit, before its connection broke: the step is done, not to be done again
    except Exception as exc:
        if is_store_trouble(exc):
            raise
        # Not the store's trouble: the database refused the value, or baton has a bug. The step fails with
        # the error kept, under its Retry policy, rather than going round again and again.
        return await _failed(mode, attempt, exc, started, recount=bool(ctx.calls))
    emitted = tuple(e[0] for e in ctx.events)
    if emitted:
        await mode.db(hooks.emitted, store, attempt.runtime, emitted)
    return Succeeded(output, cancel, result, bool(ctx.calls), emitted)


async def _work(mode: Mode, step: Step, value: BaseModel, ctx: StepContext) -> Any:
    """The step's work on `value`, in the mode's way, under the step's timeout if it has one."""
    if step.timeout is None:
        return await mode.work(step, value)
    if mode.on_loop:
        return await timed_on_loop(step, value, ctx)
    return timed_here(step, value, ctx)


async def _checkpoint(mode: Mode, attempt: Attempt, write: Callable[..., bool], unwritten: list[Any]) -> bool:
    """Write the checkpoint (with the calls not yet written); returns whether a cancel was requested."""
    checkpoint = mode.write(write)
    if not mode.on_loop:
        try:
            return await checkpoint
        except LostOwnership:
            raise  # the caller looks whether it committed before it writes the calls
        except Exception:
            # The database failing, rolled back: the calls were paid for.
            await _write_calls_anyway(mode, attempt, unwritten)
            raise
    # Shielded: cancelled while it is written, the checkpoint (with its calls) commits whole or not at all.
    writing = asyncio.ensure_future(checkpoint)
    try:
        return await asyncio.shield(writing)
    except BaseException:
        if not writing.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(writing)
        failed = writing.done() and (writing.cancelled() or writing.exception() is not None)
        if failed and not (not writing.cancelled() and isinstance(writing.exception(), LostOwnership)):
            await _write_calls_anyway(mode, attempt, unwritten)
        raise


async def _failed(mode: Mode, attempt: Attempt, exc: Exception, started: Any, *, recount: bool) -> Outcome:
    """Record a failed attempt: another follows after a delay (`RetryLater`) or the step failed for good."""
    step = attempt.step
    info = error_info(exc)
    retrying = step.retry.should_retry(exc, attempt.this_go)
    # A provider that says when to come back (Retry-After) is waited for at least that long.
    delay = max(step.retry.delay(attempt.this_go), getattr(exc, "retry_after", None) or 0.0) if retrying else 0.0
    finished = utcnow()
    failed = StepResult(
        idx=attempt.idx, name=step.name, attempt=attempt.number, started_at=started, finished_at=finished, error=info
    )
    # A worker's retry waits in the broker: the sweeper must not take that quiet for a lost message.
    wake_at = finished + timedelta(seconds=delay) if retrying and attempt.lease_owner is not None else None
    cancel = await mode.db(
        functools.partial(
            mode.store.steps.record_failure, attempt.run_id, attempt.owner, failed, retrying=retrying,
            recount=recount, end_run=attempt.ends_run, lease_owner=attempt.lease_owner, wake_at=wake_at,
        )
    )  # fmt: skip
    if retrying:
        return RetryLater(delay, attempt.number + 1, info, cancel)
    return Failed(info)
