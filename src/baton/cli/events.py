"""The event commands: `baton events` (list, replay, dispatch) and `baton trace`."""

from __future__ import annotations

import contextlib

import click
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from baton._ids import check_prefix
from baton.cli._common import _errors_to_exit, _out, _print_json, _store, cli_settings, import_modules, setting_option
from baton.cli.render import _status
from baton.errors import RunNotFound, UserError
from baton.run import Run
from baton.runtime import get_runtime
from baton.store import RunStore
from baton.store.events import EventRecord

__all__ = ["events", "render_events", "render_trace", "trace"]


@click.group(invoke_without_command=True)
@click.option("--dead", is_flag=True, help="Only events a subscriber did not handle (dead letters).")
@click.option("--correlation", "correlation_id", help="Only the events of this chain.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
@setting_option(
    "--database-url", variable="BATON_DATABASE_URL",
    help="Where runs are stored (SQLite or PostgreSQL URL). Default: sqlite file ./.baton/baton.db.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@_errors_to_exit
def events(
    ctx: click.Context, dead: bool, correlation_id: str | None, limit: int, database_url: str | None, as_json: bool
) -> None:
    """List events, newest first, with where each went (the run of each subscriber, and its status)."""
    if ctx.invoked_subcommand is not None:
        return
    found = _store(cli_settings(database_url=database_url)).events.list(
        dead=dead, correlation_id=correlation_id, limit=limit
    )
    if as_json:
        _print_json([e.to_json_dict() for e in found])
    else:
        _out().print(render_events(found))


@events.command()
@click.argument("event_id")
@click.option("--subscriber", help="Deliver to this subscriber only (default: every one that did not handle it).")
@click.option("--runtime", default=None, help="Where the new runs execute. Default: the event's own runtime.")
@click.option("--import", "imports", multiple=True, metavar="MODULE", help="Import a module defining subscribers.")
@setting_option("--database-url", variable="BATON_DATABASE_URL", help="The run store.")
@_errors_to_exit
def replay(
    event_id: str, subscriber: str | None, runtime: str | None, imports: tuple[str, ...], database_url: str | None
) -> None:
    """Deliver an event again to the subscribers that did not handle it (a dead letter), in new runs."""
    from baton import api
    from baton.events import redeliver

    settings = cli_settings(database_url=database_url)  # before the modules' agents are declared
    import_modules(imports)
    store: RunStore = _store(settings)
    event = store.events.get(event_id)
    if event is None:
        raise UserError(f"no event with id {event_id!r} in this store")
    started = redeliver(store, event.id, runtime=runtime, subscriber=subscriber)
    if not started:
        raise UserError(f"event {event.id} has no dead-lettered delivery to replay (see: baton events --dead)")
    for run_id in started:
        click.echo(run_id)
    if get_runtime(runtime or event.runtime).executes_here:  # the new runs execute here: let them end first
        api.wait_chain(event.correlation_id, store=store)


@events.command()
@click.option("--runtime", default=None, help="Only the events of this runtime. Default: all, each on its own.")
@click.option("--older-than", default=0.0, show_default=True, type=float, help="Only events older than this (s).")
@click.option("--import", "imports", multiple=True, metavar="MODULE", help="Import a module defining subscribers.")
@setting_option("--database-url", variable="BATON_DATABASE_URL", help="The run store.")
@_errors_to_exit
def dispatch(runtime: str | None, older_than: float, imports: tuple[str, ...], database_url: str | None) -> None:
    """Hand the events left in the outbox (a process died before it could) to their subscribers."""
    from baton.events import dispatch as dispatch_events

    settings = cli_settings(database_url=database_url)  # before the modules' agents are declared
    import_modules(imports)
    # A person asking: events that a failed try put off go now too (each failure still counts a try).
    count = dispatch_events(_store(settings), runtime, older_than_s=older_than or None, now_too=True)
    click.echo(f"{count} events handed to their subscribers")


@click.command()
@click.argument("correlation_id")
@setting_option("--database-url", variable="BATON_DATABASE_URL", help="The run store.")
@_errors_to_exit
def trace(correlation_id: str, database_url: str | None) -> None:
    """Print a chain of runs and events (a correlation id, or any of its runs' ids) as a tree."""
    store = _store(cli_settings(database_url=database_url))
    store.runs.reap()  # runs whose owner is gone show interrupted
    # A chain's id as given first: `publish(correlation_id="4711")` names a chain by any text, however short.
    chain = correlation_id
    runs = store.runs.list(correlation_id=chain, limit=10_000)
    found = store.events.list(correlation_id=chain, limit=10_000)
    if not runs and not found:
        check_prefix(correlation_id)  # else a run's id (or a prefix of it) names its chain too
        with contextlib.suppress(RunNotFound):
            chain = store.runs.get(correlation_id).correlation_id or correlation_id
            runs = store.runs.list(correlation_id=chain, limit=10_000)
            found = store.events.list(correlation_id=chain, limit=10_000)
    if not runs and not found:
        raise UserError(f"no run or event belongs to chain {correlation_id!r}")
    _out().print(render_trace(chain, runs, found))


def render_events(found: list[EventRecord]) -> Table:
    """Events as a table: type, when, where they came from, where they went, and why not (a dead letter's
    reason, or the last failed try of one still in the outbox)."""
    table = Table(title="events", title_justify="left")
    for column in ("event", "type", "created (UTC)", "from run", "subscriber", "run", "status"):
        table.add_column(column, no_wrap=column in ("event", "from run", "run"))  # ids are copied whole
    table.add_column("why", overflow="fold")
    for e in found:
        rows = e.deliveries or ()
        first = True
        for d in rows or [None]:
            when = e.created_at.strftime("%Y-%m-%d %H:%M:%S")
            waiting = (
                f"(not dispatched yet, {e.tries} failed {'try' if e.tries == 1 else 'tries'})"
                if e.tries
                else "(not dispatched yet)"
            )
            why = (d.error if d else None) or (e.last_error if not e.dispatched_at else None) or ""
            table.add_row(
                e.id if first else "", e.type if first else "", when if first else "",
                (e.source_run or "(published)") if first else "",
                d.subscriber if d else ("-" if e.dispatched_at else waiting),
                (d.run_id or "-") if d else "", _status(d.status) if d else Text(""), why,
            )  # fmt: skip
            first = False
    return table


def render_trace(chain: str, runs: list[Run], found: list[EventRecord]) -> Tree:
    """A chain as a tree: each run, the events it emitted, the runs those started, and so on."""
    by_trigger: dict[str | None, list[Run]] = {}
    for run in runs:
        by_trigger.setdefault(run.trigger_event, []).append(run)
    by_source: dict[str | None, list[EventRecord]] = {}
    for event in sorted(found, key=lambda e: e.id):
        by_source.setdefault(event.source_run, []).append(event)
    tree = Tree(Text(f"chain {chain}", style="bold"))

    def add_run(node: Tree, run: Run) -> None:
        took = f" {run.duration_ms:.1f} ms" if run.duration_ms is not None else ""
        label = Text.assemble(
            ("run ", "bold"), run.id, f" {run.pipeline} ", _status(run.status.value),
            f" {run.created_at:%H:%M:%S}{took}",
        )  # fmt: skip
        branch = node.add(label)
        for event in by_source.get(run.id, []):
            add_event(branch, event)

    def add_event(node: Tree, event: EventRecord) -> None:
        waiting = "" if event.dispatched_at else " (not dispatched yet)"
        branch = node.add(
            Text.assemble(("event ", "cyan"), event.id, f" {event.type} {event.created_at:%H:%M:%S.%f}"[:-3], waiting)
        )
        started = {r.id: r for r in by_trigger.get(event.id, [])}
        for d in event.deliveries:
            run = started.pop(d.run_id, None) if d.run_id else None
            if run is not None:
                add_run(branch, run)
            else:
                branch.add(Text.assemble(f"{d.subscriber}: ", _status(d.status), f" {d.error or ''}"))
        for run in started.values():  # runs of earlier deliveries (before a replay)
            add_run(branch, run)

    for event in by_source.get(None, []):
        add_event(tree, event)
    for run in by_trigger.get(None, []):
        add_run(tree, run)
    return tree
