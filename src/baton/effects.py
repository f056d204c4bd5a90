"""Side effects done once: `baton.effect(name, act)` inside a step declared `@step(side_effect=True)`.

What users fear most about retries is a side effect repeated: the summary e-mail sent twice because the
worker died after sending and before its checkpoint. An effect has an idempotency key derived from the run,
the step and the effect's name (`RUN_ID/STEP/NAME`), handed to `act` so that it can travel with the effect
(an e-mail's Message-ID, an API's Idempotency-Key header). Around the act, a ledger in the store says:

- before acting, the key is claimed ("started"), in its own transaction;
- after acting, what `act` returned is recorded ("done"), in its own transaction, before the step goes on.

A retry, a redelivered message or a resume that reaches the effect again finds it "done" and gets the
recorded result without acting. If the act raised `EffectNotDone` (it knows it failed before acting), the
claim is dropped and a retry may act. Any other error, or a process that died between the act and its
record (a window of one commit), leaves the key "started":
baton cannot know whether it happened, so it never acts again on its own; the step fails with
`EffectUncertain`, and a person says which it was (`baton effects mark KEY --done` or `--not-done`).
"""

from __future__ import annotations

import contextvars
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from baton._context import current_step
from baton._owner import owner_alive, this_owner
from baton.errors import DefinitionError, EffectUncertain, TransientError

__all__ = ["EffectNotDone", "aeffect", "effect", "effect_key"]

T = TypeVar("T")


class EffectNotDone(TransientError):
    """Raise from an effect's `act` when it failed before acting (the server refused the connection, say):
    the key is freed, and the step's retry policy applies. Any other error leaves the effect uncertain."""


def effect_key(name: str) -> str:
    """The idempotency key of the effect `name` of the step being executed."""
    ctx = current_step()
    if ctx is None or ctx.store is None:
        raise DefinitionError(f"effect '{name}': call baton.effect inside a step of a run")
    key = f"{ctx.run_id}/{ctx.step}/{name}"
    # A person who retried the run from this step (or an earlier one) asked for it to be done again.
    generation = ctx.store.effects.rewinds(ctx.run_id, ctx.idx)
    return f"{key}/{generation + 1}" if generation else key


def effect(name: str, act: Callable[[str], T]) -> T:
    """Do `act(idempotency_key)` once for this run and step, however often the step is attempted.

    `act`'s return value must be JSON (a dict, a string, ...): it is recorded, and a later attempt that
    reaches the same effect gets it back instead of acting again. `act` raises `EffectNotDone` for a failure
    it knows came before acting; any other error leaves the effect uncertain, never done again on its own.
    In an async step, `await baton.aeffect(name, act)` does the same with an async `act`.
    """
    if inspect.iscoroutinefunction(act):
        raise DefinitionError(f"effect '{name}': its act is async; write `await baton.aeffect(...)`")
    ctx, key, found = _begin(name)
    if found is not None:
        return _recorded(ctx, name, key, found)  # type: ignore[no-any-return]
    try:
        result = act(key)
    except EffectNotDone:
        ctx.store.effects.abandon(key)
        raise
    if inspect.isawaitable(result):
        # It was never awaited, so it never acted: the claim is dropped before saying so.
        getattr(result, "close", lambda: None)()
        ctx.store.effects.abandon(key)
        raise DefinitionError(f"effect '{name}': its act returned an awaitable; write `await baton.aeffect(...)`")
    _finish(ctx, name, key, result)
    return result


async def aeffect(name: str, act: Callable[[str], Awaitable[T] | T]) -> T:
    """`effect` for async steps: `act(key)` may be async (it is awaited); the ledger is written off the loop."""
    from baton.runtime.aio import in_store_thread, in_work_thread  # the runtime imports effects' callers

    ctx = current_step()
    if ctx is None or ctx.store is None:
        raise DefinitionError(f"effect '{name}': call baton.aeffect inside a step of a run")
    ctx, key, found = await in_store_thread(ctx.store, contextvars.copy_context().run, _begin, name)
    if found is not None:
        return _recorded(ctx, name, key, found)  # type: ignore[no-any-return]
    try:
        # A sync act runs on a thread, so that it never blocks the loop.
        result = act(key) if inspect.iscoroutinefunction(act) else await in_work_thread(act, key)
        if inspect.isawaitable(result):
            result = await result
    except EffectNotDone:
        await in_store_thread(ctx.store, ctx.store.effects.abandon, key)
        raise
    await in_store_thread(ctx.store, _finish, ctx, name, key, result)
    return result  # type: ignore[return-value]


def _begin(name: str) -> tuple[Any, str, Any]:
    """Claim the effect's key in the ledger: (the step's context, the key, what the ledger had, if anything)."""
    ctx = current_step()
    if ctx is None or ctx.store is None:
        raise DefinitionError(f"effect '{name}': call baton.effect inside a step of a run")
    if not ctx.side_effect:
        raise DefinitionError(
            f"step '{ctx.step}' performs the effect '{name}' but is not declared as acting on the world: "
            "write @step(side_effect=True)"
        )
    if name in ctx.effects:
        raise DefinitionError(f"step '{ctx.step}' performs the effect '{name}' twice: give each effect its own name")
    ctx.effects.add(name)
    from baton.store import utcnow

    key = effect_key(name)
    return ctx, key, ctx.store.effects.begin(key, ctx.run_id, ctx.idx, name, utcnow(), owner=this_owner())


def _recorded(ctx: Any, name: str, key: str, found: Any) -> Any:
    """The result of an effect the ledger already had: done, in progress elsewhere, or uncertain."""
    if found.status == "done":
        return found.result
    if found.owner and found.owner != this_owner() and owner_alive(found.owner):
        # Another process on this machine took the step over while the first is still acting (its
        # heartbeat stalled past the lease): wait for it to finish rather than call the effect lost.
        raise TransientError(f"the effect '{name}' (key {key}) is in progress in {found.owner}; waiting for it")
    raise EffectUncertain(
        f"the effect '{name}' of step '{ctx.step}' (key {key}) was started at {found.started_at:%Y-%m-%d %H:%M:%S} "
        "UTC and did not record whether it happened (its process died, or it failed part-way). baton does not "
        f"do it again on its own: check, then run `baton effects mark {key} --done` (it happened) or "
        "`--not-done`, and resume the run."
    )


def _finish(ctx: Any, name: str, key: str, result: Any) -> None:
    """Record that the effect happened, with its result."""
    from baton.store import utcnow

    try:
        json.dumps(result)
    except (TypeError, ValueError):
        ctx.store.effects.finish(key, None, utcnow())  # it happened all the same
        raise DefinitionError(
            f"effect '{name}' of step '{ctx.step}' happened, but returned {type(result).__name__}, not JSON; "
            "it is recorded as done, without its result"
        ) from None
    ctx.store.effects.finish(key, result, utcnow())
