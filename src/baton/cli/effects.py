"""`baton effects`: the side effects steps did (or started), and a person's word on an uncertain one."""

from __future__ import annotations

import click
from rich.table import Table

from baton.cli._common import _errors_to_exit, _out, _print_json, _store, cli_settings, json_option, store_option
from baton.errors import UserError
from baton.store import utcnow

__all__ = ["effects"]


@click.group(invoke_without_command=True)
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this run's.")
@store_option
@json_option
@click.pass_context
def effects(ctx: click.Context, run_id: str | None, database_url: str | None, as_json: bool) -> None:
    """List side effects (of one run, or all), newest first: done, or started and uncertain."""
    if ctx.invoked_subcommand is not None:
        return
    store = _store(cli_settings(database_url=database_url))
    found = store.effects.list(store.runs.resolve_id(run_id) if run_id else None)
    if as_json:
        _print_json([e.to_json_dict() for e in found])
        return
    table = Table("key", "status", "started (UTC)", "result")
    for e in found:
        shown = "uncertain: see `baton effects mark`" if e.status == "started" else str(e.result)
        table.add_row(e.key, e.status, f"{e.started_at:%Y-%m-%d %H:%M:%S}", shown)
    _out().print(table)


@effects.command()
@click.argument("key")
@click.option("--done/--not-done", required=True, help="It happened (never do it again), or it did not (a retry may).")
@store_option
@_errors_to_exit
def mark(key: str, done: bool, database_url: str | None) -> None:
    """Say whether an uncertain side effect happened; then `baton resume` the run."""
    store = _store(cli_settings(database_url=database_url))
    if store.effects.get(key) is None:
        raise UserError(f"no side effect with key {key!r}; `baton effects --run RUN_ID` lists a run's")
    store.effects.mark(key, done=done, now=utcnow())
    click.echo(f"{key}: {'done' if done else 'not done: a retry will act'}")
