"""Following a chain: `baton run` waits for the runs its events started, prints the chain and judges all of it.

A run that emits events starts other runs (its chain: every run and event of its correlation id). Its own
success says little about theirs: the chain succeeded only when every run of it succeeded (or waits for a
person's approval, which is not a failure) and every event reached its subscribers.
"""

from __future__ import annotations

from dataclasses import dataclass

from baton import api
from baton.cli._common import EXIT_FAILED, EXIT_OK, _err, _out, _print_json
from baton.errors import RunError
from baton.run import Run
from baton.status import RunStatus
from baton.store import RunStore
from baton.store.events import Delivery, EventRecord

__all__ = ["CHAIN_OK", "ChainEnd", "follow_chain", "hints", "show_chain"]

# A run of a chain that ends in any other status (failed, interrupted, cancelled: rejected too) fails the chain,
# as it fails `baton run` of that run alone.
CHAIN_OK = frozenset({RunStatus.SUCCEEDED, RunStatus.AWAITING_APPROVAL})
# How much of a failed step's message the chain's one line about it keeps.
_MESSAGE_CHARS = 200
# More runs than anyone reads in a terminal; `baton trace` reads as many.
_MOST = 10_000


@dataclass(frozen=True, slots=True)
class ChainEnd:
    """A chain as it stands when following it ended: its runs oldest first, its events, and whether it was
    still going (the wait ran out)."""

    id: str
    runs: list[Run]
    events: list[EventRecord]
    still_going: float | None = None  # the seconds waited, when the chain had not ended by then

    @property
    def failed(self) -> list[Run]:
        """The runs that ended in a status other than succeeded or awaiting approval."""
        return [r for r in self.runs if r.status.finished and r.status not in CHAIN_OK]

    @property
    def undelivered(self) -> list[tuple[EventRecord, Delivery]]:
        """The deliveries that started no run (the subscriber could not be found or the dispatch gave up)."""
        return [(e, d) for e in self.events for d in e.deliveries if d.status == "undeliverable"]

    @property
    def more_than_one(self) -> bool:
        """True when there is more to it than the started run: other runs, a lost event, or runs still going."""
        return len(self.runs) > 1 or bool(self.undelivered) or self.still_going is not None

    @property
    def ok(self) -> bool:
        """True when every run succeeded or awaits approval, every event was delivered and nothing still goes."""
        return not self.failed and not self.undelivered and self.still_going is None


def follow_chain(store: RunStore, run: Run, *, timeout: float | None) -> ChainEnd:
    """Wait until the chain `run` belongs to has ended (at most `timeout` seconds; None: until it does), and
    read it. Runs waiting for approval have ended: a person acts next, not the chain."""
    chain = run.correlation_id or run.id
    still_going = None
    try:
        api.wait_chain(chain, store=store, timeout=timeout)
    except RunError:  # its own timeout: said below, with what still goes
        still_going = timeout
    store.runs.reap()  # runs whose owner is gone show interrupted
    runs = sorted(store.runs.list(correlation_id=chain, limit=_MOST), key=lambda r: r.id)
    return ChainEnd(chain, runs, store.events.list(correlation_id=chain, limit=_MOST), still_going)


def hints(run: Run) -> list[str]:
    """What a person can do next about `run`: resume it, or approve or reject it."""
    if run.status.resumable:
        return [f"resume with: baton resume {run.id}"]
    if run.status is RunStatus.AWAITING_APPROVAL:
        return [f"awaiting approval: baton approve {run.id} (or baton reject {run.id})"]
    return []


def show_chain(store: RunStore, started: Run, end: ChainEnd, *, as_json: bool) -> int:
    """Print the started run and its chain (as `baton trace` draws it), say how the chain ended, and return
    the exit code: 0 when all of it succeeded or waits for approval, else 1."""
    if as_json:
        brief = [{"id": r.id, "pipeline": r.pipeline, "status": r.status.value} for r in end.runs]
        _print_json(started.to_json_dict() | {"chain": brief})
        return EXIT_OK if end.ok else EXIT_FAILED
    from baton.cli.events import render_trace
    from baton.cli.render import render_run

    _out().print(render_run(started))
    _out().print(render_trace(end.id, end.runs, end.events))
    say = _say
    for run in end.runs:
        for hint in hints(run):
            say(hint)
    for run in end.failed:
        say(f"chain {end.id}: run {run.id} ({run.pipeline}) {_why(store, run)}")
    for event, delivery in end.undelivered:
        say(f"chain {end.id}: event {event.id} ({event.type}) never reached {delivery.subscriber}: {delivery.error}")
    if end.still_going is not None:
        going = [f"{r.id} ({r.pipeline}) {r.status.value}" for r in end.runs if not r.status.finished]
        say(
            f"chain {end.id} is still going after {end.still_going:g} s"
            + (f" (run {', '.join(going)})" if going else " (an event waits to be delivered)")
            + f"; follow it with: baton trace {end.id}"
        )
    elif end.ok:
        waiting = sum(r.status is RunStatus.AWAITING_APPROVAL for r in end.runs)
        tail = f", {waiting} awaiting approval" if waiting else ""
        say(f"chain {end.id}: {len(end.runs)} runs ended, none failed{tail}")
    return EXIT_OK if end.ok else EXIT_FAILED


def _say(line: str) -> None:
    _err().print(line, highlight=False, markup=False, soft_wrap=True)


def _why(store: RunStore, run: Run) -> str:
    """How a run of the chain failed, in a few words: its status, the step, the error's type and message."""
    what = str(run.status.value)
    if run.failed_step:
        what += f" at step {run.failed_step}"
        recorded = store.runs.get(run.id)
        error = next((s.error for s in recorded.steps if s.name == run.failed_step and s.error), None)
        if error is not None:
            message = " ".join(error.message.split())
            cut = message[:_MESSAGE_CHARS] + ("..." if len(message) > _MESSAGE_CHARS else "")
            what += f": {error.type}: {cut}"
    return what
