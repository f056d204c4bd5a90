"""`within_limits`: a model call made when every limit it obeys has room, in every process sharing them.

The call first takes its slots and reserves its request and tokens (one atomic step of the backend, which
says when it may start), sleeps until then, and is made. A missing slot is asked for again: at once when a
call of this process frees one, otherwise on a short poll. Its slots are renewed every third of a lease
while it runs, so a process that dies gives them back within a lease. A 429 holds back every process that
shares the limit, then the call waits its turn again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from baton.ratelimits.backend import Backend
from baton.ratelimits.limit import Limit
from baton.ratelimits.meter import Meter, meters_for

__all__ = ["DEFAULT_RETRY_AFTER", "within_limits"]

T = TypeVar("T")
log = logging.getLogger("baton.ratelimits")

# A 429 without Retry-After holds calls back this long; a Retry-After past the maximum is taken for a mistake.
DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 600.0
# How often a call waiting for a slot another process holds asks again: soon, then less and less often.
_FIRST_POLL, _LAST_POLL = 0.01, 0.1


async def within_limits(
    limits: Sequence[Limit],
    *,
    tokens: int,
    key: str | None,
    backend: Backend,
    call: Callable[[], Awaitable[T]],
    used: Callable[[T], int],
    on_refused: Callable[[BaseException], Awaitable[None]] | None = None,
    max_refusals: int = 5,
) -> T:
    """`await call()` once every one of `limits` has room for a request and `tokens` (the call's estimate),
    holding a slot of each capped one while it runs; `used(result)` says what it really spent.

    `key` is the fingerprint of the call's API key (`fingerprint`), for limits kept per key. A call the
    server refuses with a 429 holds back every process sharing these limits (its `retry_after`, else
    `DEFAULT_RETRY_AFTER` seconds), is passed to `on_refused`, and waits its turn again, at most
    `max_refusals` times; the next 429 is raised (not passed to `on_refused`). Other errors are raised at once.
    """
    if not limits:
        return await call()
    meters = meters_for(limits, key)
    for refusals in range(max(0, max_refusals) + 1):
        holder = uuid.uuid4().hex
        start = await _admitted(backend, meters, tokens, holder)
        renewing = _renewing(backend, meters, holder)
        charge = -tokens  # given back unless the call says what it spent
        try:
            if start > 0:
                await asyncio.sleep(start)
            result = await call()
            charge = used(result) - tokens
            return result
        except Exception as exc:
            if getattr(exc, "status", None) != 429:
                raise
            await _quietly(backend.block(meters, seconds=_retry_after(exc)), "record a 429")
            if refusals == max_refusals:
                raise
            refused: Exception = exc
        finally:
            if renewing is not None:
                renewing.cancel()
            await _quietly(backend.finish(meters, holder=holder, tokens=charge), "give back a call's capacity")
            _local.wake(meters)
        if on_refused is not None:
            await on_refused(refused)
    raise AssertionError("unreachable")  # the loop returns or raises


async def _admitted(backend: Backend, meters: Sequence[Meter], tokens: int, holder: str) -> float:
    """Wait until the backend takes the call; returns the seconds it must still wait to start.

    Under a cap, the calls of this process that obey the same limits ask one at a time, in order, so that
    while slots are missing only the first asks again, not every one that waits. Without one, a call is
    taken in one round trip (its turn in the pace is reserved), and calls ask at once.
    """
    if not any(m.slots for m in meters):
        return await _asked(backend, meters, tokens, holder)
    async with _local.turn(meters):
        return await _asked(backend, meters, tokens, holder)


async def _asked(backend: Backend, meters: Sequence[Meter], tokens: int, holder: str) -> float:
    poll = _FIRST_POLL
    while True:
        taking = asyncio.ensure_future(backend.take(meters, tokens=tokens, holder=holder))
        try:
            taken = await asyncio.shield(taking)
        except asyncio.CancelledError:
            # Cancelled (the step's timeout) while the backend took the call: it may have, and then nothing
            # would give back its slot (for a lease's time) and its tokens.
            with contextlib.suppress(Exception):
                if (await taking).taken:
                    await backend.finish(meters, holder=holder, tokens=-tokens)
            raise
        if taken.taken:
            return taken.wait
        if not taken.full:
            # Held back by a 429 until then; every call that waits wakes then, a little apart.
            await asyncio.sleep(taken.wait + random.uniform(0, 0.01))
            continue
        await _local.released(meters, min(max(taken.wait, 0.001), poll * random.uniform(0.8, 1.2)))
        poll = min(poll * 1.5, _LAST_POLL)


def _renewing(backend: Backend, meters: Sequence[Meter], holder: str) -> asyncio.Task[None] | None:
    if not any(m.slots for m in meters):
        return None

    async def renew() -> None:
        while True:
            await asyncio.sleep(backend.lease / 3)
            await _quietly(backend.renew(meters, holder=holder), "renew a call's slot")

    return asyncio.get_running_loop().create_task(renew())


def _retry_after(exc: BaseException) -> float:
    seconds = getattr(exc, "retry_after", None)
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
        return DEFAULT_RETRY_AFTER
    return min(float(seconds), MAX_RETRY_AFTER)


async def _quietly(step: Awaitable[None], what: str) -> None:
    # After the call (or its error) nothing is gained by failing: a slot not freed comes back with its lease,
    # tokens not given back are a little capacity lost for a minute.
    try:
        await step
    except Exception as exc:
        log.warning("rate limits: could not %s: %s", what, exc)


class _Local:
    """What the calls of this process share: their turns to ask the backend, per loop and set of meters, and
    the first call's wake-up when a call of this process frees a slot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    def turn(self, meters: Sequence[Meter]) -> asyncio.Lock:
        """The lock the calls of this loop take turns on to ask for `meters` (asyncio locks serve one loop)."""
        names = tuple(m.name for m in meters)
        with self._lock:
            turns = self._turns.setdefault(asyncio.get_running_loop(), {})
            return turns.setdefault(names, asyncio.Lock())

    async def released(self, meters: Sequence[Meter], timeout: float) -> None:
        """Sleep `timeout` seconds, or less if a call of this process frees a slot of `meters`."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        names = [m.name for m in meters if m.slots]
        with self._lock:
            for name in names:
                self._waiting.setdefault(name, []).append(woken)
        try:
            await asyncio.wait_for(woken, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                for name in names:
                    waiting = self._waiting.get(name, [])
                    if woken in waiting:
                        waiting.remove(woken)
                    if not waiting:
                        self._waiting.pop(name, None)

    def wake(self, meters: Sequence[Meter]) -> None:
        """A call of `meters` ended: wake the calls waiting for a slot of one of them."""
        with self._lock:
            chosen = [w for m in meters if m.slots for w in self._waiting.pop(m.name, [])]
        for woken in chosen:
            with contextlib.suppress(RuntimeError):  # its loop closed: the waiter is gone
                woken.get_loop().call_soon_threadsafe(_set, woken)


def _set(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)


_local = _Local()


def _after_fork() -> None:
    global _local
    _local = _Local()


os.register_at_fork(after_in_child=_after_fork)
