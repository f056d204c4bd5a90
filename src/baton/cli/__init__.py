"""The `baton` command line: run, runs, show, resume, cancel, demo, worker, serve, events, trace."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from baton import api
from baton._extras import DISTRIBUTION, require
from baton._loader import load_target, normalize_target
from baton.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    _err,
    _errors_to_exit,
    _out,
    _print_json,
    _store,
    budget_of,
    budget_options,
    cli_settings,
    import_modules,
    json_option,
    setting_option,
    store_option,
)
from baton.cli.bulk import BULK_STATUSES, check_options, resume_all
from baton.cli.chain import follow_chain, hints, show_chain
from baton.cli.effects import effects
from baton.cli.events import events, trace
from baton.errors import UserError
from baton.limits import MAX_DEPTH, MAX_INPUT_BYTES, parse_json, read_bounded
from baton.patterns.registry import find_pattern
from baton.run import Run
from baton.runtime import get_runtime
from baton.status import RunStatus
from baton.store import RunStore

__all__ = ["main"]


def _read_input(text: str) -> Any:
    """The value `--input` gives: JSON, or @FILE (@- for stdin), within baton's limits on inputs."""
    if text.startswith("@"):
        path = text[1:]
        try:
            if path == "-":
                data = read_bounded(sys.stdin.buffer, what="--input @-")
            else:
                with open(path, "rb") as f:
                    data = read_bounded(f, what=f"--input {text}")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--input") from None
    else:
        # The argument's own bytes: text that was not UTF-8 comes back as it was given, and is refused.
        data = os.fsencode(text)
    try:
        return parse_json(data, what=f"--input {text}" if text.startswith("@") else "--input")
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="--input") from None


def _exit_for(run: Run) -> int:
    # A run waiting for a person did what it could: not a failure.
    return EXIT_OK if run.status in (RunStatus.SUCCEEDED, RunStatus.AWAITING_APPROVAL) else EXIT_FAILED


def _finish(run: Run, as_json: bool) -> None:
    from baton.cli.render import render_run

    if as_json:
        _print_json(run.to_json_dict())
    else:
        _out().print(render_run(run))
        for hint in hints(run):
            _err().print(hint, highlight=False, markup=False)
    sys.exit(_exit_for(run))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION)
def main() -> None:
    """baton: typed, durable multi-agent pipelines."""


@main.command()
@click.argument("target")
@click.option(
    "--input", "input_text", required=True,
    help=f"The run's input: JSON, or @FILE (@- for stdin); at most {MAX_INPUT_BYTES // 2**20} MiB, nested at most "
    f"{MAX_DEPTH} deep.",
)  # fmt: skip
@setting_option(
    "--runtime", variable="BATON_RUNTIME", show_default=True,
    help="Where the steps execute: local (this process) or celery (`baton worker` processes).",
)  # fmt: skip
@click.option(
    "--wait/--no-wait", default=None,
    help="Wait for the run to end. Default: wait on the local runtime; on celery, print the run id at once.",
)  # fmt: skip
@click.option(
    "--follow/--no-follow", default=True, show_default=True,
    help="When waiting: also wait for the runs its events start (its chain), print the chain as `baton trace` "
    "does, and exit 1 if any run of it failed. --no-follow: the started run's result alone.",
)  # fmt: skip
@click.option(
    "--follow-timeout", default=600.0, show_default=True, type=click.FloatRange(0, min_open=True), metavar="SECONDS",
    help="On celery, stop following a chain still going after this long (exit 1, naming what still runs).",
)  # fmt: skip
@budget_options
@store_option
@json_option
@_errors_to_exit
def run(
    target: str, input_text: str, runtime: str | None, wait: bool | None, follow: bool, follow_timeout: float,
    budget_usd: float | None, budget_tokens: int | None, budget_chain: bool, database_url: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Run TARGET (package.module:name or path/file.py:name) on an input; exit 0 if it succeeded, 1 if not.

    When it waits (the default on the local runtime, --wait on celery) and the run's events started other runs,
    it follows that chain to its end and exits 0 only if every run of it succeeded or awaits approval.
    """
    from baton.cli.render import LiveProgress

    data = _read_input(input_text)
    budget = budget_of(budget_usd, budget_tokens, budget_chain)
    settings = cli_settings(database_url=database_url, runtime=runtime)  # before the target's agents are declared
    pattern = load_target(target)
    if not hasattr(pattern, "run") or not hasattr(pattern, "step_names"):
        raise UserError(f"target {target!r} is {pattern!r}, not a baton pattern such as a Pipeline")
    pattern.target = normalize_target(target)
    runtime = settings.runtime
    # A runtime that cannot take the run now (its broker down) says so before the store is made, if need be.
    check_ready = getattr(get_runtime(runtime), "check_ready", None)
    if check_ready is not None:
        check_ready(pattern)
    store = _store(settings, create=True)
    if not (get_runtime(runtime).executes_here or wait):
        run_id = pattern.submit(data, store=store, runtime=runtime, budget=budget)
        _submitted(store, run_id, f"submitted to the {runtime} runtime", wait, as_json)
        return
    with LiveProgress(_err(), pattern.step_names, pattern.name) as progress:
        result = pattern.run(data, store=store, runtime=runtime, observer=progress, budget=budget)
    here = get_runtime(runtime).executes_here
    if follow:
        # Runs that execute in this process must end before it does: no time limit on those.
        end = follow_chain(store, result, timeout=None if here else follow_timeout)
        if end.more_than_one:
            sys.exit(show_chain(store, store.runs.get(result.id), end, as_json=as_json))
    elif here:
        # Runs started by the events it emitted execute in this process: let them end before it does.
        api.wait_chain(result.correlation_id or result.id, store=store)
    _finish(store.runs.get(result.id), as_json)


def _submitted(store: RunStore, run_id: str, what: str, wait: bool | None, as_json: bool) -> None:
    """After a run went to workers: wait for it and show it, or print its id and how to follow it."""
    if wait:
        _finish(api.wait(run_id, store=store), as_json)
    found = store.runs.get(run_id)
    if as_json:
        _print_json(found.to_json_dict())
    else:
        click.echo(run_id)
        _err().print(f"{what}; follow it with: baton show {run_id}", highlight=False, markup=False)


@main.command()
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only runs with this status.")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
@store_option
@json_option
@_errors_to_exit
def runs(status: str | None, pipeline: str | None, limit: int, database_url: str | None, as_json: bool) -> None:
    """List runs, newest first."""
    from baton.cli.render import render_runs

    store = _store(cli_settings(database_url=database_url))
    store.runs.reap()  # runs whose owner is gone show interrupted
    found = store.runs.list(status=status, pipeline=pipeline, limit=limit)
    if as_json:
        _print_json([r.to_json_dict(with_steps=False) for r in found])
    else:
        _out().print(render_runs(found))


@main.command()
@click.argument("run_id")
@store_option
@json_option
@_errors_to_exit
def show(run_id: str, database_url: str | None, as_json: bool) -> None:
    """Show one run with every step: status, attempts, checkpoint, error and timings."""
    from baton.cli.render import render_run

    store = _store(cli_settings(database_url=database_url))
    store.runs.reap(run_id)  # a run whose owner is gone shows interrupted
    found = store.runs.get(run_id)
    budgets = store.budgets.for_run(found.id)
    if as_json:
        shown = found.to_json_dict()
        if budgets:
            shown["budgets"] = [b.to_json_dict() for b in budgets]
        _print_json(shown)
    else:
        _out().print(render_run(found, budgets))


@main.command()
@click.argument("run_id", required=False)
@click.option(
    "--runtime", default=None, help="Where the rest of the run executes. Default: where it ran (local or celery)."
)
@click.option("--wait/--no-wait", default=None, help="On celery, wait for the run to end (default: do not).")
@click.option(
    "--from",
    "from_step",
    metavar="STEP",
    help="Retry from this step: its checkpoint and the ones after it are discarded and run again "
    "(a finished run too, a succeeded one included).",
)
@click.option("--all", "all_runs", is_flag=True, help="Every run in --status instead of one RUN_ID (a dry run).")
@click.option("--status", type=click.Choice(BULK_STATUSES), help="With --all: the runs in this status.")
@click.option("--pipeline", help="With --all: only the runs of this pipeline.")
@click.option(
    "--older-than", metavar="DURATION",
    help="With --all: only the runs unchanged for this long (30s, 10m, 2h, 1d), by their last update.",
)  # fmt: skip
@click.option(
    "--yes", is_flag=True,
    help="With --all: resume them; without it they are only listed. With --from: do again the side effects "
    "(an e-mail sent) of the steps that run again without asking; without it baton asks on a terminal, and "
    "elsewhere refuses.",
)  # fmt: skip
@budget_options
@store_option
@json_option
@_errors_to_exit
def resume(
    run_id: str | None, runtime: str | None, wait: bool | None, from_step: str | None, all_runs: bool,
    status: str | None, pipeline: str | None, older_than: str | None, yes: bool, budget_usd: float | None,
    budget_tokens: int | None, budget_chain: bool, database_url: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Continue a failed or interrupted run from its first unfinished step; finished steps are not re-run.

    With --all --status S (interrupted, failed or pending), every run in that status (of --pipeline, unchanged
    for --older-than) is listed; with --yes each is resumed on its own runtime, one line a run, and the
    command exits 1 if any could not be. Runs of the local runtime go on in this process, which waits for them.
    """
    given = {"--runtime": runtime, "--wait": wait, "--from": from_step, "--status": status, "--pipeline": pipeline}
    given |= {"--budget-usd": budget_usd, "--budget-tokens": budget_tokens, "--budget-chain": budget_chain}
    check_options(run_id, all_runs, given | {"--older-than": older_than, "--yes": yes})
    budget = budget_of(budget_usd, budget_tokens, budget_chain)
    if all_runs:
        store = _store(cli_settings(database_url=database_url))
        bulk = {"pipeline": pipeline, "older_than": older_than, "yes": yes, "as_json": as_json}
        sys.exit(resume_all(store, status=status or "", **bulk))
    assert run_id is not None  # check_options refused the rest
    from baton.cli.render import LiveProgress

    store = _store(cli_settings(database_url=database_url))
    store.runs.reap(run_id)  # a run whose owner is gone is interrupted, so resumable
    recorded = store.runs.get(run_id)
    pattern = find_pattern(recorded.pipeline, recorded.target)
    runtime = runtime or recorded.runtime
    here = get_runtime(runtime).executes_here
    if from_step is not None:
        _confirm_redo(store, recorded, pattern, from_step, yes)
        if not here:
            pattern.retry(recorded.id, from_step, store=store, runtime=runtime, budget=budget)
            _submitted(store, recorded.id, f"retried from step {from_step}", wait, as_json)
            return
        # A run retried in this process runs on a thread of it, which must stay until the run ends.
        with LiveProgress(_err(), [s.name for s in recorded.steps], recorded.pipeline) as progress:
            pattern.retry(recorded.id, from_step, store=store, runtime=runtime, observer=progress, budget=budget)
            api.wait(recorded.id, store=store)
        api.wait_chain(recorded.correlation_id or recorded.id, store=store)  # the runs its events started, here
        _finish(store.runs.get(recorded.id), as_json)
    if not here:
        api.resume_later(recorded.id, store=store, runtime=runtime, budget=budget)
        _submitted(store, recorded.id, f"resumed on the {runtime} runtime", wait, as_json)
        return
    with LiveProgress(_err(), [s.name for s in recorded.steps], recorded.pipeline) as progress:
        result = pattern.resume(recorded.id, store=store, runtime=runtime, observer=progress, budget=budget)
    api.wait_chain(result.correlation_id or result.id, store=store)  # the runs its events started, here
    _finish(store.runs.get(result.id), as_json)


def _confirm_redo(store: RunStore, run: Run, pattern: Any, step: str, yes: bool) -> None:
    """Before a retry from `step` does side effects again (the e-mail sent again), name them and ask: on a
    terminal interactively, elsewhere only `--yes` says yes."""
    from baton._redo import describe_effects, effects_redone, refuse_redo

    effects = [] if yes else effects_redone(store, run, pattern, step)
    if not effects:
        return
    if not sys.stdin.isatty():
        refuse_redo(store, run, pattern, step, confirm_with="add --yes", effects=effects)
    say = _err().print
    say(f"retrying run {run.id} from step '{step}' does again what it already did:", highlight=False, markup=False)
    for effect in effects:
        say(f"  {describe_effects(run, [effect])}", highlight=False, markup=False)
    if not click.confirm("Do it again?", default=False, err=True):
        raise UserError(f"run {run.id} not retried: nothing was done")


@main.command()
@click.argument("run_id")
@click.option("--wait/--no-wait", default=True, help="Wait for the run to stop again (default: wait).")
@click.option(
    "--import", "imports", multiple=True, metavar="MODULE",
    help="Import a module first (one that registers a model provider, say); repeatable.",
)  # fmt: skip
@store_option
@json_option
@_errors_to_exit
def approve(run_id: str, wait: bool, imports: tuple[str, ...], database_url: str | None, as_json: bool) -> None:
    """Approve a run awaiting approval: it goes on at the step it waited before."""
    settings = cli_settings(database_url=database_url)  # before the modules' agents are declared
    import_modules(imports)
    store = _store(settings)
    recorded = store.runs.get(run_id)
    # A run that goes on in this process keeps it until the run stops.
    api.approve(recorded.id, store=store, wait=wait or get_runtime(recorded.runtime).executes_here)
    _submitted(store, recorded.id, "approved", wait, as_json)


@main.command()
@click.argument("run_id")
@click.option("--reason", default="", help="Why: kept in the run's history.")
@store_option
@json_option
@_errors_to_exit
def reject(run_id: str, reason: str, database_url: str | None, as_json: bool) -> None:
    """Reject a run awaiting approval: it ends cancelled, before the step it waited before."""
    found = api.reject(run_id, reason=reason, store=_store(cli_settings(database_url=database_url)))
    if as_json:
        _print_json(found.to_json_dict())
    else:
        _out().print(f"run {found.id} rejected: cancelled", highlight=False)


@main.command()
@click.argument("run_id")
@store_option
@json_option
@_errors_to_exit
def cancel(run_id: str, database_url: str | None, as_json: bool) -> None:
    """Cancel a run: nothing after its current step starts."""
    store = _store(cli_settings(database_url=database_url))
    status = api.cancel(run_id, store=store)
    found = store.runs.get(run_id)
    if as_json:
        _print_json(found.to_json_dict())
    elif status is RunStatus.CANCELLED:
        _out().print(f"run {found.id} cancelled", highlight=False)
    else:
        _out().print(f"run {found.id}: cancel requested; nothing after its current step will start", highlight=False)


@main.command()
@click.option(
    "--file", "file_path", type=click.Path(exists=True, dir_okay=False), help="Your own text, Markdown or PDF file."
)
@setting_option(
    "--model", variable="BATON_MODEL", show_default=True,
    help="The model of the three agents: local, openai:MODEL or anthropic:MODEL.",
)  # fmt: skip
@store_option
@json_option
@_errors_to_exit
def demo(file_path: str | None, model: str | None, database_url: str | None, as_json: bool) -> None:
    """Run the document pipeline (extract -> chunk -> summarise -> classify) on a bundled sample."""
    from baton.cli.render import LiveProgress
    from baton.demo import document_pipeline, load_document

    doc, warnings = load_document(file_path)
    for warning in warnings:
        _err().print(f"warning: {warning}", style="yellow", highlight=False, markup=False)
    settings = cli_settings(database_url=database_url, model=model)
    store = _store(settings, create=True)
    pipeline = document_pipeline(settings.providers.model)
    with LiveProgress(_err(), pipeline.step_names, pipeline.name) as progress:
        result = pipeline.run(doc, store=store, observer=progress)
    if not as_json and result.step("summarise").output:
        from baton.cli.render import render_demo

        _out().print(render_demo(result))
    _finish(result, as_json)


@main.command()
@setting_option(
    "--concurrency", "-c", variable="BATON_WORKER_CONCURRENCY", show_default=True, type=click.IntRange(0, 4096),
    help="Steps this worker executes at once, its steps in flight. With --pool threads, each waits for its model "
    "call on a thread and async steps share the process's event loop (0: BATON_MAX_IN_FLIGHT, 256 by default); "
    "with prefork, one step per process (0: one per CPU).",
)  # fmt: skip
@setting_option(
    "--pool", variable="BATON_WORKER_POOL", show_default=True, type=click.Choice(["threads", "prefork", "solo"]),
    help="How steps run: threads (many I/O-bound steps in one process) or prefork (CPU-bound steps).",
)  # fmt: skip
@click.option(
    "--import", "imports", multiple=True, metavar="MODULE",
    help="Import a module defining patterns before starting (else they are imported from each run's target).",
)  # fmt: skip
@click.option("--loglevel", default="info", show_default=True, help="Celery's log level.")
@setting_option(
    "--broker-url", variable="BATON_BROKER_URL",
    help="The Celery broker: Redis, or RabbitMQ (amqp://..., with BATON_RESULT_BACKEND set to a Redis URL). "
    "Default: redis://127.0.0.1:6379/0.",
)  # fmt: skip
@store_option
@_errors_to_exit
def worker(
    concurrency: int | None, pool: str | None, imports: tuple[str, ...], loglevel: str, broker_url: str | None,
    database_url: str | None,
) -> None:  # fmt: skip
    """Start a Celery worker that executes the steps of runs submitted with --runtime celery."""
    require("celery", "baton worker")
    from baton.runtime.celery import broker_display, celery_app, check_broker, worker_argv

    # Installed in this process: the worker's tasks run here, or in children forked from it, and find them.
    settings = cli_settings(database_url=database_url, broker_url=broker_url, concurrency=concurrency, pool=pool)
    app = celery_app(settings)
    check_broker(app)  # before the store is made: a worker that cannot start leaves nothing behind
    store = _store(settings, create=True)  # migrates, and fails early with a clear message when unreachable
    described = store.describe()
    store.close()
    import_modules(imports)
    _err().print(f"baton worker: store {described}, broker {broker_display(app)}", highlight=False, markup=False)
    chosen = settings.worker
    steps = chosen.concurrency or (settings.max_in_flight if chosen.pool == "threads" else os.cpu_count() or 1)
    _err().print(f"baton worker: {steps} steps in flight at most ({chosen.pool} pool)", highlight=False, markup=False)
    app.worker_main(worker_argv(concurrency=steps, pool=chosen.pool, loglevel=loglevel))


@main.command()
@setting_option("--host", variable="BATON_HOST", show_default=True)
@setting_option("--port", variable="BATON_PORT", show_default=True, type=int)
@click.option(
    "--import", "imports", multiple=True, metavar="MODULE",
    help="Import a module defining subscribers (e.g. baton.examples.triage); repeatable.",
)  # fmt: skip
@setting_option(
    "--runtime", variable="BATON_RUNTIME", show_default=True, help="Where the subscribers of published events run."
)
@store_option
@_errors_to_exit
def serve(
    host: str | None, port: int | None, imports: tuple[str, ...], runtime: str | None, database_url: str | None
) -> None:
    """Serve the dashboard (/ui/runs) and the HTTP API (/docs): runs, and events to publish.

    With BATON_DASHBOARD_TOKEN set, everything needs the token. Without it the server only binds to
    loopback, anyone there may read, and changes need a token made for this server's lifetime, printed once.
    """
    require("serve", "baton serve")
    import uvicorn

    from baton.web.access import Access, is_loopback
    from baton.web.app import create_app

    settings = cli_settings(database_url=database_url, runtime=runtime, host=host, port=port)
    host, port = settings.server.host, settings.server.port
    access = Access.from_setting(settings.server.dashboard_token)
    if not access.configured and not is_loopback(host):
        raise UserError(
            f"baton serve will not listen on {host} without a token: anyone who can reach it could act on your "
            "runs. Set BATON_DASHBOARD_TOKEN (a long random string), or serve on 127.0.0.1."
        )
    if settings.runtime == "celery":
        from baton.runtime.celery import check_broker

        # A broker it cannot use or reach is refused now, in one line, not by the first request or its sweeper.
        check_broker(get_runtime("celery").app)
    import_modules(imports)
    store = _store(settings, create=True)
    shown = f"[{host}]" if ":" in host else host
    say = _err().print
    say(f"baton serve: http://{shown}:{port}/ui/runs, store {store.describe()}", highlight=False, markup=False)
    if not access.configured:
        # Only this terminal learns the token; it dies with the server. Set BATON_DASHBOARD_TOKEN to choose one.
        say(
            f"actions (resume, retry, cancel, submit, publish) need a token; sign in with "
            f"http://{shown}:{port}/login#token={access.token}",
            highlight=False, markup=False,
        )  # fmt: skip
    app = create_app(store, runtime=settings.runtime, access=access)
    uvicorn.run(app, host=host, port=port, log_level="info")


main.add_command(events)
main.add_command(effects)
main.add_command(trace)
