"""What every command shares: exit codes, error handling, consoles, the store option, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from baton.errors import BatonError, UserError
from baton.store import RunStore, open_store

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "_err",
    "_errors_to_exit",
    "_out",
    "_print_json",
    "_store",
    "import_modules",
    "json_option",
    "store_option",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _errors_to_exit(fn: F) -> F:
    """Turn baton's errors into a clear message: the user's mistakes exit 2, failures exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        except BatonError as exc:
            click.secho(f"error: {type(exc).__name__}: {exc}", fg="red", err=True)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            # The runtime has already marked the run interrupted; it resumes like a failed one.
            click.secho("interrupted: `baton runs --status interrupted` lists it; `baton resume ID` goes on", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _err() -> Console:
    return _console(stderr=True)


def _out() -> Console:
    return _console(stderr=False)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr)
    # Piped output (CI logs, `| less`) has no width; 80 columns would fold run ids and tracebacks.
    if not console.is_terminal:
        console = Console(stderr=stderr, width=160)
    return console


def store_option(fn: F) -> F:
    """The --database-url option every command that reads or writes runs takes."""
    return click.option(
        "--database-url",
        envvar="BATON_DATABASE_URL",
        show_envvar=True,
        default=None,
        help="Where runs are stored (SQLite or PostgreSQL URL). Default: sqlite file ./.baton/baton.db.",
    )(fn)


def json_option(fn: F) -> F:
    """The --json option: print machine-readable JSON instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def _store(url: str | None) -> RunStore:
    return open_store(url)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def import_modules(modules: tuple[str, ...]) -> None:
    """Import what `--import` names (a module or a file path): its patterns and subscribers register."""
    from baton._loader import load_target

    for module in modules:
        load_target(f"{module}:__name__")
