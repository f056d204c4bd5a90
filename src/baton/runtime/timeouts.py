"""A step's work under its timeout, in each of the executor's two modes.

Async work is cancelled when its time is up. Sync work cannot be stopped from outside its thread, so a timed
sync step runs on a daemon thread of its own: at the timeout the attempt fails and the thread is abandoned. It
runs on to the end of the function (a daemon thread does not keep the process alive), what it returns is
thrown away, and its step context is marked abandoned, which refuses its further model calls and effects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from pydantic import BaseModel

from baton._context import StepContext
from baton.errors import StepTimeout
from baton.runtime.aio import background
from baton.steps import Step

__all__ = ["timed_here", "timed_on_loop"]

T = TypeVar("T")

log = logging.getLogger("baton.runtime")


def timed_here(step: Step, value: BaseModel, ctx: StepContext) -> Any:
    """`step`'s work on `value`, this thread waiting at most its timeout (a plain thread's `Here` mode)."""
    seconds = step.timeout
    assert seconds is not None
    if step.is_async:
        future = background().submit(_in_context(step.fn(value), contextvars.copy_context()))
    else:
        future = _on_own_thread(step, value)
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        future.cancel()  # an async step's task is cancelled on its loop; a thread runs on, abandoned
        raise _abandon(step, ctx, future) from None
    except BaseException:
        if not future.done():
            future.cancel()
            ctx.abandoned = True  # interrupted (Ctrl-C): a thread that runs on may not act for the attempt
        raise


async def timed_on_loop(step: Step, value: BaseModel, ctx: StepContext) -> Any:
    """`step`'s work on `value`, awaited at most its timeout on the running loop (the `OnLoop` mode)."""
    seconds = step.timeout
    assert seconds is not None
    work: asyncio.Future[Any] = (
        asyncio.ensure_future(step.fn(value)) if step.is_async else asyncio.wrap_future(_on_own_thread(step, value))
    )
    try:
        # Not wait_for: it waits for the cancelled work to end, and work that ignores its cancellation would
        # hold the attempt past its timeout.
        done, _ = await asyncio.wait((work,), timeout=seconds)
    except BaseException:
        work.cancel()
        ctx.abandoned = True  # the run was cancelled or interrupted: a thread that runs on may not act for it
        raise
    if not done:
        work.cancel()
        raise _abandon(step, ctx, work)
    return work.result()


def _on_own_thread(step: Step, value: BaseModel) -> concurrent.futures.Future[Any]:
    """Start `step.fn(value)` on a daemon thread of its own, in this context (the step being executed)."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = context.run(step.fn, value)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=f"baton-timed-{step.name}", daemon=True).start()
    return future


def _abandon(step: Step, ctx: StepContext, work: Any) -> StepTimeout:
    """Mark the attempt's work abandoned and say so when it ends; the error its attempt fails with."""
    ctx.abandoned = True
    attempt = ctx.attempt

    def ended(done: Any) -> None:
        if done.cancelled():
            return
        exc = done.exception()  # retrieved, so that nothing complains of an exception never looked at
        how = f"raised {type(exc).__name__}" if exc is not None else "returned"
        log.info("step '%s' (attempt %d) %s after its timeout; that was thrown away", step.name, attempt, how)

    work.add_done_callback(ended)
    return StepTimeout(step.name, step.timeout or 0.0, attempt)


async def _in_context(coro: Coroutine[Any, Any, T], ctx: contextvars.Context) -> T:
    # On the background loop, the step sees the context of the thread that waits for it.
    task = asyncio.get_running_loop().create_task(coro, context=ctx)
    return await task
