"""`baton effects`: the side effects steps did (or started), and a person's word on an uncertain one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from baton.cli._common import _errors_to_exit, _out, _print_json, _store, cli_settings, json_option, store_option
from baton.effects import NO_RESULT, settle

__all__ = ["effects"]

# A result is a ledger row, not a file store.
MAX_RESULT_BYTES = 1 << 20


@click.group(invoke_without_command=True)
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this run's.")
@store_option
@json_option
@click.pass_context
@_errors_to_exit
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
        if e.status == "done":
            shown = json.dumps(e.result, ensure_ascii=False)
        else:
            shown = f"uncertain: see `baton effects mark`{' (with --result)' if e.result_used else ''}"
        table.add_row(e.key, e.status, f"{e.started_at:%Y-%m-%d %H:%M:%S}", shown)
    _out().print(table)


@effects.command()
@click.argument("key")
@click.option("--done/--not-done", required=True, help="It happened (never do it again), or it did not (a retry may).")
@click.option(
    "--result",
    "result_text",
    metavar="JSON",
    help="With --done: what the act returned, as JSON or @FILE (@- for stdin); needed when the step uses it, "
    "and checked against what the step declared (returns=).",
)
@store_option
@_errors_to_exit
def mark(key: str, done: bool, result_text: str | None, database_url: str | None) -> None:
    """Say whether an uncertain side effect happened (and its result); then resume the run.

    A step that uses the result (it declared `returns=`) needs `--done --result JSON`; `--done` alone is refused.
    """
    result = NO_RESULT if result_text is None else _read_result(result_text)
    store = _store(cli_settings(database_url=database_url))
    settle(store, key, done=done, result=result)
    click.echo(f"{key}: {'done' if done else 'not done: a retry will act'}")


def _read_result(text: str) -> Any:
    """The JSON of --result: given, or read from @FILE (@- for stdin), at most MAX_RESULT_BYTES."""
    raw: bytes = text.encode()
    if text.startswith("@"):
        path = text[1:]
        try:
            if path == "-":
                raw = sys.stdin.buffer.read(MAX_RESULT_BYTES + 1)
            else:
                with Path(path).open("rb") as f:
                    raw = f.read(MAX_RESULT_BYTES + 1)
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--result") from None
    if len(raw) > MAX_RESULT_BYTES:
        raise click.BadParameter(f"more than {MAX_RESULT_BYTES} bytes", param_hint="--result")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"not UTF-8 text (byte {exc.start})", param_hint="--result") from None
    except RecursionError:
        raise click.BadParameter("JSON nested too deep", param_hint="--result") from None
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="--result") from None
