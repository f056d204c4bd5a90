"""Event-driven agents: `on(type)` subscribes a step, `emit(type, payload)` publishes from inside one.

```python
@on("ticket.received")
@step
def triage(ticket: Ticket) -> Triage:
    emit("ticket.triaged", TriagedTicket(...))
    return Triage(...)
```

An emitted event is written with the emitting step's checkpoint (an outbox): if the step's attempt fails,
its events are never seen. It is then dispatched: each subscriber gets a run of its own whose input is the
event's payload, validated against the subscriber's input contract. A subscriber handles an event once
(one delivery per event and subscriber); a subscriber whose run fails for good dead-letters the event, which
`baton events --dead` lists and `baton events replay EVENT_ID` delivers again. An event that cannot be
handed over at all (the broker refuses it, the database does, a bug) is tried again by later dispatches,
`MAX_TRIES` times in all with a growing wait between, then dead-lettered with its last error.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from baton._context import current_step
from baton._ids import new_run_id
from baton.budgets import Budget, check_budget
from baton.contracts import refuse_nul, validate_input, validate_json
from baton.errors import ContractViolation, DefinitionError, InvalidInput, UserError
from baton.patterns import Pipeline
from baton.patterns.base import Pattern
from baton.patterns.registry import find_pattern
from baton.runtime import get_runtime
from baton.runtime.base import hooks
from baton.steps import Step
from baton.store import RunStore, open_store, utcnow
from baton.store.budgets import chain_budget_id
from baton.store.events import EventRecord

__all__ = [
    "MAX_TRIES",
    "RETRY_SECONDS",
    "Subscription",
    "dispatch",
    "emit",
    "on",
    "publish",
    "redeliver",
    "subscribers",
]

log = logging.getLogger("baton.events")

# How many dispatches of an event may fail before its subscribers get a dead letter, and the wait after the
# first failure, doubled after each: tries at about 0 s, 15 s, 45 s, 1 min 45 s and 3 min 45 s (a sweep's pace,
# so a broker restart is waited out), then the dead letter, which `baton events replay` delivers again.
MAX_TRIES = 5
RETRY_SECONDS = 15.0

EVENT_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")

T = TypeVar("T", Step, Pattern)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscriber of an event type: the pattern a delivery runs (a step is a one-step pipeline)."""

    event_type: str
    pattern: Pattern

    @property
    def name(self) -> str:
        """The subscriber's name: its pattern's."""
        return self.pattern.name


_subscriptions: dict[str, dict[str, Subscription]] = {}
_lock = threading.Lock()


def on(event_type: str, *, name: str | None = None, budget: Budget | None = None) -> Callable[[T], T]:
    """Subscribe the decorated step (or pattern) to `event_type`; it is returned unchanged.

    Each delivery of an event of that type starts a run of it, named `name` (default: the step's name), under
    `budget` (a step's; a pattern declares its own with `budget=`).
    """
    budget = check_budget(budget, f"on({event_type!r})")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        raise DefinitionError(f"on({event_type!r}): an event type is letters, digits, '_', '-' and '.'")

    def subscribe(target: T) -> T:
        if isinstance(target, Step):
            # Where the step is declared, for other processes to import it: an agent's work is a method of baton's
            # own, so it is the module that subscribes it.
            own = getattr(target.fn, "__self__", None) is target
            module = (None if own else getattr(target.fn, "__module__", None)) or sys._getframe(1).f_globals.get(
                "__name__"
            )
            pattern: Pattern = Pipeline(name or target.name, [target], budget=budget)
            pattern._module = module
            pattern.stands_for = target  # type: ignore[attr-defined]
        elif isinstance(target, Pattern):
            if budget is not None:
                raise DefinitionError(
                    f"on({event_type!r}, budget=...) subscribes pattern '{target.name}': declare its budget on the "
                    "pattern itself"
                )
            pattern = target
        else:
            hint = " (put @on above @step)" if callable(target) else ""
            raise DefinitionError(f"on({event_type!r}) takes a step, an agent or a pattern, not {target!r}{hint}")
        with _lock:
            _subscriptions.setdefault(event_type, {})[pattern.name] = Subscription(event_type, pattern)
        return target

    return subscribe


def subscribers(event_type: str) -> list[Subscription]:
    """The subscriptions to `event_type` known in this process."""
    with _lock:
        return list(_subscriptions.get(event_type, {}).values())


def emit(event_type: str, payload: BaseModel) -> str:
    """Publish an event from inside a step; it is written with the step's checkpoint. Returns its id.

    The payload is checked here against every subscriber's input contract, so that a bad hand-off fails in
    the step that made it.
    """
    ctx = current_step()
    if ctx is None:
        raise UserError("emit() works inside a step; elsewhere use baton.publish(type, payload)")
    payload_json = _checked(event_type, payload, where=f"step '{ctx.step}'", step=ctx.step)
    event_id = new_run_id()
    ctx.events.append((event_id, event_type, payload_json))
    return event_id


def publish(
    event_type: str,
    payload: BaseModel | dict[str, Any],
    *,
    store: RunStore | str | None = None,
    runtime: str = "local",
    correlation_id: str | None = None,
    budget: Budget | None = None,
) -> str:
    """Record an event from outside any run (a request, a script) and dispatch it; returns its id at once.

    `budget` is one budget for the whole chain it starts: every run its delivery starts, and every run their
    events start, hold their model calls against it (besides any budget of their own).
    """
    budget = check_budget(budget, f"publish({event_type!r})")
    if not EVENT_TYPE.match(event_type):
        raise UserError(f"event type {event_type!r} is not valid: letters, digits, '_', '-' and '.'")
    if isinstance(payload, dict):
        subs = subscribers(event_type)
        # The payload is the first subscriber's input; all the others are checked against it just below.
        first = subs[0].pattern if subs else None
        payload = validate_input(first.input, payload, step=first.steps[0].name) if first else _Loose(**payload)
    payload_json = _checked(event_type, payload, where="publish()", step=None, error=InvalidInput)
    s = store if isinstance(store, RunStore) else open_store(store)
    event_id = new_run_id()
    if budget is not None:
        s.budgets.set(chain_budget_id(correlation_id or event_id), tokens=budget.tokens, usd=budget.usd)
    s.events.add(event_id, event_type, payload_json, correlation_id or event_id, utcnow(), runtime=runtime)
    dispatch_soon(s, runtime)  # never raises: what fails to go out now goes with a later dispatch
    return event_id


class _Loose(BaseModel, extra="allow"):
    """A payload for an event type nobody here subscribes to: kept as given."""


def _checked(
    event_type: str,
    payload: BaseModel,
    *,
    where: str,
    step: str | None,
    error: type[ContractViolation] = ContractViolation,
) -> str:
    if not isinstance(payload, BaseModel):
        raise UserError(f"{where}: the payload of event '{event_type}' must be a contract (a Pydantic model)")
    payload_json = payload.model_dump_json()
    # Checked even with no subscriber: the outbox keeps the payload, and a store that cannot must not get it.
    refuse_nul(
        payload_json, contract=type(payload).__name__, step=step, where=f"payload of event '{event_type}'", error=error
    )
    for sub in subscribers(event_type):
        first = sub.pattern.steps[0]
        validate_json(sub.pattern.input, payload_json, step=first.name, where=f"input (event '{event_type}')")
    return payload_json


def dispatch(
    store: RunStore,
    runtime: str | None = None,
    *,
    older_than_s: float | None = None,
    event_ids: Sequence[str] | None = None,
    now_too: bool = False,
) -> int:
    """Hand the events of the outbox to their subscribers; returns how many events were handed over.

    Each event goes to its subscribers on its own runtime (the emitting run's, or the one it was published
    for); with `runtime`, only the events of that runtime are dispatched. Its subscribers are the ones this
    process knows and the ones other processes recorded, imported from their targets; one that cannot be
    imported gets a dead letter saying why. An event that fails to go out stays in the outbox for a later
    dispatch (see `MAX_TRIES`), and never holds up the others. With `older_than_s`, only events older than
    that (a sweep after a crash, leaving fresh events to the process that emitted them); with `now_too`,
    also those a failed try put off (a person asked).
    """
    started = utcnow()
    older = started - timedelta(seconds=older_than_s) if older_than_s is not None else None
    due = None if now_too else started
    _declare(store)
    handed = 0
    after: str | None = None
    by_type: dict[str, dict[str, Subscription | str]] = {}  # one look at the recorded subscribers per type
    while True:
        batch = store.events.outbox(older_than=older, after=after, runtime=runtime, ids=event_ids, due=due, limit=100)
        for event in batch:
            after = event.id
            try:
                if event.type not in by_type:
                    by_type[event.type] = _subscribers_everywhere(store, event.type)
                for name, sub in by_type[event.type].items():
                    if isinstance(sub, Subscription):
                        deliver(store, event, sub, event.runtime)
                    else:
                        store.events.undeliverable(event.id, name, sub, utcnow())
                store.events.mark_dispatched(event.id, utcnow())
                handed += 1
            except Exception as exc:  # the broker, the database, a bug: a later dispatch tries again, or gives up
                _failed(store, event, by_type.get(event.type), exc)
        if len(batch) < 100:
            return handed


def _failed(store: RunStore, event: EventRecord, known: dict[str, Subscription | str] | None, exc: Exception) -> None:
    """Count a dispatch of `event` that failed; after `MAX_TRIES`, its subscribers get a dead letter with why."""
    reason = f"{type(exc).__name__}: {exc}"
    try:
        now = utcnow()
        retry_at = now + timedelta(seconds=RETRY_SECONDS * 2**event.tries)
        tries = store.events.failed_try(event.id, reason, now, retry_at)
        if 0 < tries < MAX_TRIES:
            log.warning(
                "event %s (%s) could not be handed over (try %d of %d), again after %s",
                event.id, event.type, tries, MAX_TRIES, f"{retry_at:%H:%M:%S}", exc_info=exc,
            )  # fmt: skip
        elif tries >= MAX_TRIES:
            names = list(known) if known else [s.name for s in subscribers(event.type)]
            names += [n for n in ([] if known else store.events.subscriptions_of(event.type)) if n not in names]
            why = f"not handed over after {tries} tries; the last failed with {reason}"
            store.events.dead_letter(event.id, names or ["(dispatch)"], why, now)
            log.error("event %s (%s) is a dead letter: %s", event.id, event.type, why, exc_info=exc)
    except Exception:  # the store itself: the event is not to blame, and waits for the next dispatch
        log.warning("event %s (%s) could not be handed over yet", event.id, event.type, exc_info=exc)


def _subscribers_everywhere(store: RunStore, event_type: str) -> dict[str, Subscription | str]:
    """The subscribers of `event_type`: known here, or recorded by others and imported from their targets
    (a string: why one could not be)."""
    found: dict[str, Subscription | str] = {s.name: s for s in subscribers(event_type)}
    for name, target in store.events.subscriptions_of(event_type).items():
        if name in found:
            continue
        try:
            if not target:
                raise UserError("it recorded no target to import it from")
            find_pattern(name, target)
        except Exception as exc:
            found[name] = f"subscriber '{name}' of '{event_type}' cannot be imported here ({target}): {exc}"
            continue
        sub = next((s for s in subscribers(event_type) if s.name == name), None)
        found[name] = sub or f"importing {target} did not subscribe '{name}' to '{event_type}'"
    return found


_declared: set[int] = set()


def _declare(store: RunStore) -> None:
    """Record this process's subscriptions in the store (once per store, and again when new ones appear)."""
    with _lock:
        known = [(t, s.name, s.pattern.target) for t, subs in _subscriptions.items() for s in subs.values()]
    key = hash((id(store), store.url, tuple(sorted((t, n, tg or "") for t, n, tg in known))))
    if key in _declared:
        return
    store.events.record_subscriptions(known, utcnow())
    _declared.add(key)


def deliver(
    store: RunStore, event: EventRecord, sub: Subscription, runtime: str, *, replaces: str | None = None
) -> str | None:
    """Start `sub`'s run of `event`; None when it was already delivered (or the payload does not fit)."""
    first = sub.pattern.steps[0]
    try:
        value = validate_json(sub.pattern.input, json.dumps(event.payload), step=first.name, where="input (event)")
    except ContractViolation as exc:
        store.events.undeliverable(event.id, sub.name, str(exc), utcnow())
        return None
    return get_runtime(runtime).submit(
        store, sub.pattern, value, correlation_id=event.correlation_id, trigger_event=event.id,
        delivery=(sub.name, replaces),
    )  # fmt: skip


def redeliver(
    store: RunStore, event_id: str, *, runtime: str | None = None, subscriber: str | None = None
) -> list[str]:
    """Deliver an event again to its dead-lettered subscribers (only `subscriber`'s, if given); returns the new
    runs. A delivery that succeeded, or whose run still goes on, is never handed over again."""
    event = store.events.get(event_id)
    if event is None:
        raise UserError(f"no event with id {event_id!r} in this store")
    started = []
    for delivery in event.deliveries:
        if (subscriber and delivery.subscriber != subscriber) or not delivery.dead:
            continue
        sub = _subscribers_everywhere(store, event.type).get(delivery.subscriber)
        if not isinstance(sub, Subscription):
            raise UserError(sub or f"subscriber '{delivery.subscriber}' of '{event.type}' is not known here")
        run_id = deliver(store, event, sub, runtime or event.runtime, replaces=delivery.run_id or "")
        if run_id is not None:
            started.append(run_id)
    return started


def dispatch_soon(store: RunStore, runtime: str = "local") -> None:
    """Dispatch the outbox without waiting, so that nothing waits for the chain; never raises.

    One dispatcher thread per store takes every request made while it works (a burst of published events
    costs one pass over the outbox, not one each); it ends when idle, and the interpreter waits for it at
    exit, so that a script's chain is handed over before it stops. When no thread can start (the
    interpreter is shutting down), it dispatches here and now.
    """
    with _lock:
        dispatcher = _dispatchers.get((id(store), runtime))
        if dispatcher is None:
            dispatcher = _dispatchers[(id(store), runtime)] = _Dispatcher(store, runtime)
    dispatcher.kick()


def _hand_over(store: RunStore, runtime: str, event_ids: Sequence[str]) -> None:
    """After a checkpoint wrote events: a run executing here dispatches in the background, so that its
    next step does not wait; a worker hands over its own events before it goes on (what others emitted or
    published is theirs to hand over, or a sweep's)."""
    if get_runtime(runtime).executes_here:
        dispatch_soon(store, runtime)
    else:
        dispatch(store, runtime, event_ids=event_ids)


def _sweep(store: RunStore, runtime: str, older_than_s: float) -> None:
    dispatch(store, runtime, older_than_s=older_than_s)


hooks.on_emitted(_hand_over)
hooks.on_sweep(_sweep)


class _Dispatcher:
    """Passes over the outbox of one store, for the events of one runtime, while anyone asks."""

    def __init__(self, store: RunStore, runtime: str) -> None:
        self.store = store
        self.runtime = runtime
        self.lock = threading.Lock()
        self.pending = False
        self.thread: threading.Thread | None = None

    def kick(self) -> None:
        _wait_at_exit()
        with self.lock:
            self.pending = True
            if self.thread is not None:
                return  # the running pass sees `pending` and goes round again
            self.thread = threading.Thread(target=self._loop, name="baton-dispatch")
            try:
                self.thread.start()
                return
            except RuntimeError:
                self.thread, self.pending = None, False
        _quietly(self.store, self.runtime)

    def _loop(self) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    self.thread = None
                    return
                self.pending = False
            _quietly(self.store, self.runtime)


_dispatchers: dict[tuple[int, str], _Dispatcher] = {}
_waits_at_exit = False


def _wait_at_exit() -> None:
    """Make the end of the interpreter wait for the dispatchers and the runs they start here, registered from
    the thread that publishes (a dispatcher thread is too late: the interpreter is ending by then)."""
    global _waits_at_exit
    if _waits_at_exit:  # every emitted event passes here: no lock once it is done
        return
    with _lock:
        if _waits_at_exit:
            return
        try:
            # Before the interpreter shuts its thread pools down, which the runs need (`atexit` is too late).
            threading._register_atexit(_finish_dispatching)  # type: ignore[attr-defined]
        except RuntimeError:
            return  # already ending: a dispatcher started now hands over in the caller's thread
        _waits_at_exit = True


def _finish_dispatching() -> None:
    """A script that published an event and ended: its events are handed over, and the runs they started in
    this process end, before the interpreter stops."""
    try:
        while True:
            for dispatcher in list(_dispatchers.values()):
                with dispatcher.lock:
                    thread = dispatcher.thread
                if thread is not None and thread.is_alive():
                    thread.join()
            get_runtime("local").drain()  # the runs those events started here, and what their own events started
            with _lock:
                busy = [d for d in _dispatchers.values() if d.thread is not None and d.thread.is_alive()]
            if not busy:
                return
    except KeyboardInterrupt:
        # A second Ctrl-C, or the first one while waiting here: stop waiting; the runs show interrupted.
        log.warning("stopped waiting for the runs this process started; `baton resume` them")


def _quietly(store: RunStore, runtime: str) -> None:
    try:
        dispatch(store, runtime)
    except Exception:  # the outbox keeps the events; a sweep hands them over
        log.warning("could not dispatch events now; they wait in the outbox", exc_info=True)
