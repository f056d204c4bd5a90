"""`baton resume --all`: every run in one status resumed on its own runtime, listed first (a dry run)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click

from baton import api
from baton.cli._common import EXIT_FAILED, EXIT_OK, _print_json
from baton.errors import BatonError, UserError
from baton.patterns.registry import find_pattern
from baton.runtime import get_runtime
from baton.runtime.base import wait_for
from baton.status import RunStatus
from baton.store import RunStore, utcnow
from baton.store.browse import RunRef

__all__ = ["BULK_STATUSES", "check_options", "parse_duration", "resume_all"]

# What a bulk resume may take up: the runs that stopped (failed, interrupted) or never started (pending: on
# celery, queued or lost with the broker's messages; queued again, a run goes on once).
BULK_STATUSES = ("interrupted", "failed", "pending")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """A duration such as 30s, 10m, 2h or 1d; a `UserError` naming --older-than for anything else."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise UserError(f"--older-than {text!r}: write a number and a unit, such as 30s, 10m, 2h or 1d")
    try:
        return timedelta(seconds=float(found[1]) * _UNITS[found[2]])
    except OverflowError:
        raise UserError(f"--older-than {text!r} is longer than any run has existed") from None


def check_options(run_id: str | None, all_runs: bool, given: dict[str, Any]) -> None:
    """Refuse, in one line, what `baton resume` cannot do with or without --all (`given`: the other options)."""
    if all_runs and run_id is not None:
        raise UserError(f"give a RUN_ID or --all, not both (got {run_id!r} and --all)")
    if all_runs:
        if not given.get("--status"):
            raise UserError(f"--all needs --status: one of {', '.join(BULK_STATUSES)}")
        one = ("--runtime", "--from", "--wait", "--budget-usd", "--budget-tokens", "--budget-chain")
        alone = [name for name in one if given.get(name) not in (None, False)]
        if alone:
            raise UserError(f"{alone[0]} resumes one run: give a RUN_ID instead of --all")
        if given.get("--older-than"):
            parse_duration(given["--older-than"])  # refused before the store is opened
        return
    with_all = [name for name in ("--status", "--pipeline", "--older-than") if given.get(name)]
    if with_all:
        raise UserError(f"{with_all[0]} goes with --all (baton resume --all --status S); for one run give its id")
    if given.get("--yes") and not given.get("--from"):
        raise UserError("--yes goes with --all (baton resume --all --status S) or with --from STEP")
    if run_id is None:
        raise UserError("give the RUN_ID to resume, or --all --status S for every run in a status")


@dataclass
class _Outcome:
    ref: RunRef
    error: str | None = None
    ended: RunStatus | None = None


def resume_all(
    store: RunStore, *, status: str, pipeline: str | None, older_than: str | None, yes: bool, as_json: bool
) -> int:
    """List (or with `yes`, resume) every run in `status`, one line each as it goes, then a summary.

    Returns the exit code: 1 if any could not be resumed, or was resumed here and did not succeed.
    """
    changed_before = utcnow() - parse_duration(older_than) if older_than else None
    store.runs.reap()  # runs whose owner is gone are interrupted, and resumable
    found = store.browse.each(status=status, pipeline=pipeline, changed_before=changed_before)
    what = f"{status} run" + (f" of pipeline '{pipeline}'" if pipeline else "")
    since = f" unchanged for {older_than}" if older_than else ""
    kept: list[_Outcome] = []  # for --json, every run; else only those that go on in this process
    total = refused = 0
    for ref in found:
        total += 1
        outcome = _resume_one(store, ref, as_json) if yes else _Outcome(ref)
        refused += outcome.error is not None
        if not yes and not as_json:
            click.echo(_line(ref))
        if as_json or (yes and outcome.error is None and get_runtime(ref.runtime).executes_here):
            kept.append(outcome)
    if not yes:
        _report(kept, as_json, f"{_count(total, what)}{since} would be resumed; add --yes to resume them", yes)
        return EXIT_OK
    here = [o for o in kept if o.error is None and get_runtime(o.ref.runtime).executes_here]
    if here and not as_json:
        click.echo(f"waiting for the {_count(len(here), 'run')} resumed in this process to end")
    for outcome in here:
        outcome.ended = _wait(store, outcome, as_json)
    not_ok = sum(o.ended not in (RunStatus.SUCCEEDED, RunStatus.AWAITING_APPROVAL) for o in here)
    summary = f"resumed {total - refused} of {_count(total, what)}{since}"
    summary += f"; {refused} could not be resumed" if refused else ""
    summary += f"; {not_ok} resumed in this process did not succeed" if not_ok else ""
    _report(kept, as_json, summary, yes)
    return EXIT_FAILED if refused or not_ok else EXIT_OK


def _resume_one(store: RunStore, ref: RunRef, as_json: bool) -> _Outcome:
    outcome = _Outcome(ref)
    try:
        # Listed a moment ago; another process may have resumed or cancelled it since.
        now = store.runs.brief(ref.id)
        if now is None or now.status is not ref.status:
            raise UserError(f"it is {now.status.value if now else 'gone'} now, no longer {ref.status.value}")
        pattern = _pattern(ref)
        # What `baton resume RUN_ID` does, without waiting: a pending celery run is queued again as it is.
        get_runtime(ref.runtime).resume(store, pattern, ref.id)
    except Exception as exc:  # one run's trouble (its code cannot be imported, say) does not stop the others
        outcome.error = str(exc) if isinstance(exc, BatonError) else f"{type(exc).__name__}: {exc}"
    if not as_json:
        if outcome.error is None:
            click.echo(f"resumed      {ref.id}  {ref.pipeline}  on {ref.runtime}")
        else:
            click.echo(f"not resumed  {ref.id}  {ref.pipeline}: {outcome.error}")
    return outcome


_patterns: dict[tuple[str, str | None], Any] = {}


def _pattern(ref: RunRef) -> Any:
    # Imported once per pipeline and target, a failure too: 10,000 runs of a module that no longer imports
    # try it once.
    key = (ref.pipeline, ref.target)
    if key not in _patterns:
        try:
            _patterns[key] = find_pattern(ref.pipeline, ref.target)
        except Exception as exc:
            _patterns[key] = exc
    found = _patterns[key]
    if isinstance(found, Exception):
        raise found
    return found


def _wait(store: RunStore, outcome: _Outcome, as_json: bool) -> RunStatus:
    run = wait_for(store, outcome.ref.id)
    api.wait_chain(run.correlation_id or run.id, store=store)  # the runs its events started, here
    if not as_json:
        click.echo(f"{run.status.value:<12} {run.id}  {run.pipeline}")
    return run.status


def _line(ref: RunRef) -> str:
    changed = f"{ref.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    return f"{ref.id}  {ref.pipeline}  {ref.status.value}  on {ref.runtime}  changed {changed}"


def _count(n: int, what: str) -> str:
    # The noun comes first ("failed run of pipeline 'x'"): its plural is the noun's.
    noun, _, rest = what.partition(" of ")
    return f"{n} {noun}{'' if n == 1 else 's'}" + (f" of {rest}" if rest else "")


def _report(outcomes: list[_Outcome], as_json: bool, summary: str, acted: bool) -> None:
    if as_json:
        _print_json([_as_json(o, acted) for o in outcomes])
        click.echo(summary, err=True)
    else:
        click.echo(summary)


def _as_json(outcome: _Outcome, acted: bool) -> dict[str, Any]:
    ref = outcome.ref
    out: dict[str, Any] = {
        "id": ref.id, "pipeline": ref.pipeline, "status": ref.status.value, "runtime": ref.runtime,
        "updated_at": ref.updated_at.isoformat(),
    }  # fmt: skip
    if acted:
        out |= {"resumed": outcome.error is None, "error": outcome.error}
        out["ended"] = outcome.ended.value if outcome.ended is not None else None
    return out
