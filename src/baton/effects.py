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

A step that uses what the act returned declares it: `effect(name, act, returns=Receipt)` (a Pydantic model, a
TypedDict, `list[str]`...), or the act's return annotation. The result is then validated into that type, the
first time and every time it is read back from the ledger, and the ledger keeps its JSON schema: a person who
says an uncertain effect happened must say what it returned (`--done --result JSON`), and a result that does
not fit is refused, naming the field, before anything is recorded. An effect that declares no result (a
lambda, an act annotated `-> None`) is settled with `--done` alone.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from baton._context import current_step
from baton._effect_result import ResultShape, declared_shape, describe, misfits
from baton._owner import owner_alive, this_owner
from baton.errors import DefinitionError, EffectUncertain, StepTimeout, TransientError, UserError

if TYPE_CHECKING:
    from baton.store import RunStore
    from baton.store.effects import EffectRecord

__all__ = ["NO_RESULT", "EffectNotDone", "aeffect", "effect", "effect_key", "settle"]

T = TypeVar("T")
R = TypeVar("R")


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
    generation = ctx.store.patiently(ctx.store.effects.rewinds, ctx.run_id, ctx.idx)
    return f"{key}/{generation + 1}" if generation else key


@overload
def effect(name: str, act: Callable[[str], Any], *, returns: type[R]) -> R: ...
@overload
def effect(name: str, act: Callable[[str], T], *, returns: None = None) -> T: ...
def effect(name: str, act: Callable[[str], Any], *, returns: Any = None) -> Any:
    """Do `act(idempotency_key)` once for this run and step, however often the step is attempted.

    `act`'s return value must be JSON (a dict, a string, ...) or of the type `returns` names: it is recorded,
    and a later attempt that reaches the same effect gets it back instead of acting again. With `returns` (a
    Pydantic model, a TypedDict, `list[str]`...) or an annotated act, the result is validated into that type,
    the first time and later, and a person who settles the effect by hand must give it. `act` raises
    `EffectNotDone` for a failure it knows came before acting; any other error leaves the effect uncertain,
    never done again on its own. In an async step, `await baton.aeffect(name, act)` does the same with an
    async `act`.
    """
    if inspect.iscoroutinefunction(act):
        raise DefinitionError(f"effect '{name}': its act is async; write `await baton.aeffect(...)`")
    shape = declared_shape(name, act, returns)
    ctx, key, found = _begin(name, shape)
    if found is not None:
        return _recorded(ctx, name, key, found, shape)
    try:
        result = act(key)
    except EffectNotDone:
        ctx.store.patiently(ctx.store.effects.abandon, key)
        raise
    if inspect.isawaitable(result):
        # It was never awaited, so it never acted: the claim is dropped before saying so.
        getattr(result, "close", lambda: None)()
        ctx.store.patiently(ctx.store.effects.abandon, key)
        raise DefinitionError(f"effect '{name}': its act returned an awaitable; write `await baton.aeffect(...)`")
    return _finish(ctx, name, key, result, shape)


@overload
async def aeffect(name: str, act: Callable[[str], Any], *, returns: type[R]) -> R: ...
@overload
async def aeffect(name: str, act: Callable[[str], Awaitable[T] | T], *, returns: None = None) -> T: ...
async def aeffect(name: str, act: Callable[[str], Any], *, returns: Any = None) -> Any:
    """`effect` for async steps: `act(key)` may be async (it is awaited); the ledger is written off the loop."""
    from baton.runtime.aio import in_store_thread, in_work_thread  # the runtime imports effects' callers

    ctx = current_step()
    if ctx is None or ctx.store is None:
        raise DefinitionError(f"effect '{name}': call baton.aeffect inside a step of a run")
    shape = declared_shape(name, act, returns)
    ctx, key, found = await in_store_thread(ctx.store, contextvars.copy_context().run, _begin, name, shape)
    if found is not None:
        return _recorded(ctx, name, key, found, shape)
    try:
        # A sync act runs on a thread, so that it never blocks the loop.
        result = act(key) if inspect.iscoroutinefunction(act) else await in_work_thread(act, key)
        if inspect.isawaitable(result):
            result = await result
    except EffectNotDone:
        await in_store_thread(ctx.store, ctx.store.patiently, ctx.store.effects.abandon, key)
        raise
    return await in_store_thread(ctx.store, _finish, ctx, name, key, result, shape)


def _begin(name: str, shape: ResultShape | None) -> tuple[Any, str, Any]:
    """Claim the effect's key in the ledger: (the step's context, the key, what the ledger had, if anything)."""
    ctx = current_step()
    if ctx is None or ctx.store is None:
        raise DefinitionError(f"effect '{name}': call baton.effect inside a step of a run")
    if not ctx.side_effect:
        raise DefinitionError(
            f"step '{ctx.step}' performs the effect '{name}' but is not declared as acting on the world: "
            "write @step(side_effect=True)"
        )
    if ctx.abandoned:
        # Its attempt ran past the step's timeout and failed: an act now would belong to no attempt.
        raise StepTimeout(ctx.step, ctx.timeout or 0.0, ctx.attempt)
    if name in ctx.effects:
        raise DefinitionError(f"step '{ctx.step}' performs the effect '{name}' twice: give each effect its own name")
    ctx.effects.add(name)
    from baton.store import utcnow

    key = effect_key(name)
    schema = shape.schema if shape is not None else None
    # The ledger's writes wait out the store's trouble: failing here would leave an effect uncertain for nothing.
    begin = functools.partial(ctx.store.effects.begin, owner=this_owner(), result_schema=schema)
    found = ctx.store.patiently(begin, key, ctx.run_id, ctx.idx, name, utcnow())
    if found is not None and found.result_schema != schema:
        # The step's code changed since the effect began: a person's result is checked against what it needs now.
        ctx.store.patiently(ctx.store.effects.expect, key, schema)
    return ctx, key, found


def _recorded(ctx: Any, name: str, key: str, found: Any, shape: ResultShape | None) -> Any:
    """The result of an effect the ledger already had: done, in progress elsewhere, or uncertain."""
    if found.status == "done":
        if shape is None:
            return found.result
        return shape.accept(found.result, step=ctx.step, where=_where(name, key, "recorded result"))
    if found.owner and found.owner != this_owner() and owner_alive(found.owner):
        # Another process on this machine took the step over while the first is still acting (its
        # heartbeat stalled past the lease): wait for it to finish rather than call the effect lost.
        raise TransientError(f"the effect '{name}' (key {key}) is in progress in {found.owner}; waiting for it")
    if shape is not None:
        happened = f"--done --result JSON` (it happened; JSON is what it returned, a {shape.label})"
    else:
        happened = "--done` (it happened)"
    raise EffectUncertain(
        f"the effect '{name}' of step '{ctx.step}' (key {key}) was started at {found.started_at:%Y-%m-%d %H:%M:%S} "
        "UTC and did not record whether it happened (its process died, or it failed part-way). baton does not "
        f"do it again on its own: check, then run `baton effects mark {key} {happened} or `--not-done`, and "
        "resume the run."
    )


def _where(name: str, key: str, what: str) -> str:
    return (
        f"the {what} of effect '{name}' (key {key}; it happened and is recorded as done: correct it with "
        f"`baton effects mark {key} --done --result JSON`)"
    )


def _finish(ctx: Any, name: str, key: str, result: Any, shape: ResultShape | None) -> Any:
    """Record that the effect happened, with its result; the result the step gets."""
    from baton.store import utcnow

    if shape is not None:
        try:
            value = shape.accept(result, step=ctx.step, where=_where(name, key, "result"))
        except Exception:
            kept = result if _is_json(result) else None
            ctx.store.patiently(ctx.store.effects.finish, key, kept, utcnow())  # it happened all the same
            raise
        ctx.store.patiently(ctx.store.effects.finish, key, shape.dump(value), utcnow())
        return value
    if not _is_json(result):
        ctx.store.patiently(ctx.store.effects.finish, key, None, utcnow())  # it happened all the same
        hint = f"; declare returns={type(result).__name__}" if isinstance(result, BaseModel) else ""
        raise DefinitionError(
            f"effect '{name}' of step '{ctx.step}' happened, but returned {type(result).__name__}, not JSON; "
            f"it is recorded as done, without its result{hint}"
        )
    ctx.store.patiently(ctx.store.effects.finish, key, result, utcnow())
    return result


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class _NoResult:
    def __repr__(self) -> str:
        return "NO_RESULT"


# `settle(..., result=NO_RESULT)`: the person did not say what the act returned.
NO_RESULT: Any = _NoResult()


def settle(
    store: RunStore, key: str, *, done: bool, result: Any = NO_RESULT, given_as: str = "--result"
) -> EffectRecord | None:
    """A person's word on an uncertain effect: it happened (with what it returned, when the step uses it), or
    it did not (the key is freed: a retry will act; None is returned). A result the step needs but was not
    given, or that does not fit, is refused before anything is recorded; `given_as` names where the person
    gives it (the CLI's flag, a form's field)."""
    from baton.store import utcnow
    from baton.store.effects import KEEP

    found = store.effects.get(key)
    if found is None:
        raise UserError(f"no side effect with key {key!r}; `baton effects --run RUN_ID` lists a run's")
    if not done:
        if result is not NO_RESULT:
            raise UserError(f"{given_as} is for an effect that happened: one that did not returned nothing")
        return store.effects.mark(key, done=False, now=utcnow())
    if result is not NO_RESULT:
        # What the store cannot keep (NUL in a string) is refused here, like any value crossing a boundary.
        from baton.contracts import refuse_nul
        from baton.errors import InvalidInput

        try:
            refuse_nul(json.dumps(result), contract=given_as, step=found.name, where="result", error=InvalidInput)
        except InvalidInput as exc:
            raise UserError(f"{given_as}: {exc}; nothing was recorded") from None
    if found.result_schema is not None:
        if result is NO_RESULT:
            raise UserError(
                f"the step uses what the effect {found.name!r} returned: give it as JSON with {given_as} "
                f"({describe(found.result_schema)}); nothing was recorded"
            )
        problems = misfits(found.result_schema, result)
        if problems:
            raise UserError(
                f"{given_as} does not fit what the step needs from the effect {found.name!r} "
                f"({describe(found.result_schema)}): {'; '.join(problems)}; nothing was recorded"
            )
    return store.effects.mark(key, done=True, now=utcnow(), result=KEEP if result is NO_RESULT else result)
