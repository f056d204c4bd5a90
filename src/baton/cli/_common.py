"""What every command shares: exit codes, error handling, consoles, the store option, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from sqlalchemy.engine import make_url

from baton.errors import BatonError, UserError
from baton.settings import Settings, use_settings
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
    "cli_settings",
    "import_modules",
    "json_option",
    "setting_option",
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


class SettingOption(click.Option):
    """An option over a setting: its help names the variable and the setting's default, but `Settings` reads
    the variable, not click. The value is None unless given on the command line (`cli_settings` applies it).
    """

    def consume_value(self, ctx: click.Context, opts: Mapping[str, Any]) -> tuple[Any, ParameterSource]:
        """The value given on the command line, else None: the default is the settings' to decide."""
        value, source = super().consume_value(ctx, opts)
        return (value if source is ParameterSource.COMMANDLINE else None), source

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        """Nothing: the environment is `Settings.from_env`'s to read."""
        return None


def setting_option(*decls: str, variable: str, show_default: bool = False, **kwargs: Any) -> Callable[[F], F]:
    """An option that overrides the setting of the environment variable `variable`."""
    default = Settings().variables()[variable] if show_default else None
    return click.option(
        *decls, cls=SettingOption, envvar=variable, show_envvar=True, default=default, show_default=show_default,
        **kwargs,
    )  # fmt: skip


def store_option(fn: F) -> F:
    """The --database-url option every command that reads or writes runs takes."""
    return setting_option(
        "--database-url",
        variable="BATON_DATABASE_URL",
        help="Where runs are stored (SQLite or PostgreSQL URL). Default: sqlite file ./.baton/baton.db.",
    )(fn)


def cli_settings(
    *,
    database_url: str | None = None,
    runtime: str | None = None,
    broker_url: str | None = None,
    concurrency: int | None = None,
    pool: str | None = None,
    host: str | None = None,
    port: int | None = None,
    model: str | None = None,
) -> Settings:
    """The environment's settings with the flags given on the command line, made this process's settings.

    Installed, not only returned: what a command starts without a settings argument (a provider, a celery
    worker's tasks and its forked children) finds them through `current_settings()`.
    """
    settings = Settings.from_env()
    settings = replace(
        settings,
        store=_given(settings.store, database_url=database_url),
        worker=_given(settings.worker, broker_url=broker_url, concurrency=concurrency, pool=pool),
        server=_given(settings.server, host=host, port=port),
        providers=_given(settings.providers, model=model),
        runtime=runtime or settings.runtime,
    )
    use_settings(settings)
    return settings


def _given(section: Any, **flags: Any) -> Any:
    given = {name: value for name, value in flags.items() if value is not None and value != ""}
    return replace(section, **given) if given else section


def budget_options(fn: F) -> F:
    """--budget-usd, --budget-tokens and --budget-chain: the run's budget on model spend (see `baton.Budget`)."""
    fn = click.option(
        "--budget-chain", is_flag=True,
        help="The budget is for the run's whole event chain (every run its events start), not the run alone; "
        "on resume, raise the chain's budget that stopped it.",
    )(fn)  # fmt: skip
    fn = click.option(
        "--budget-tokens", type=int, default=None, metavar="N",
        help="At most N tokens (input and output) of model calls for the run; past it no call is made and the "
        "run fails with BudgetExceeded. Replaces the budget its pipeline declares.",
    )(fn)  # fmt: skip
    return click.option(
        "--budget-usd", type=float, default=None, metavar="X",
        help="At most X dollars of model calls for the run (calls of models with a known price), checked before "
        "every call on every worker. Replaces the budget its pipeline declares.",
    )(fn)  # fmt: skip


def budget_of(usd: float | None, tokens: int | None, chain: bool = False) -> Any:
    """The `baton.Budget` of --budget-usd, --budget-tokens and --budget-chain (None when no amount is given);
    a bad one is refused naming the option."""
    if usd is None and tokens is None:
        if chain:
            raise UserError("--budget-chain goes with --budget-usd or --budget-tokens")
        return None
    from baton.budgets import Budget
    from baton.errors import DefinitionError

    try:
        return Budget(tokens=tokens, usd=usd, chain=chain)
    except DefinitionError as exc:
        option = "--budget-tokens" if "tokens=" in str(exc) else "--budget-usd"
        raise UserError(f"{option}: {str(exc).split(': ', 1)[-1]}") from None


def json_option(fn: F) -> F:
    """The --json option: print machine-readable JSON instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def _store(settings: Settings, *, create: bool = False) -> RunStore:
    """The run store; unless `create` (a command that records new runs), the default SQLite file is refused in
    one line when it is not there, not made: reading runs in the wrong folder must not leave an empty store.
    A store the settings name is opened (made) as asked."""
    if not create and not settings.store.database_url:
        _check_default_store(settings)
    return open_store(settings=settings)


def _check_default_store(settings: Settings) -> None:
    path = Path(make_url(settings.store.resolved_url()).database or "")
    if not path.exists():
        shown = f"./{path.relative_to(Path.cwd())}" if path.is_relative_to(Path.cwd()) else str(path)
        raise UserError(f"no run store here ({shown} does not exist); run a pipeline first, or set BATON_DATABASE_URL")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def import_modules(modules: tuple[str, ...]) -> None:
    """Import what `--import` names (a module or a file path): its patterns and subscribers register."""
    from baton._loader import load_target

    for module in modules:
        load_target(f"{module}:__name__")
