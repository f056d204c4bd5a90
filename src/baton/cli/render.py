"""How the CLI shows runs: Rich tables for people, a live per-step display while a run works."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from baton.run import Run
from baton.runtime.executor import Failed, Outcome, RetryLater, Succeeded
from baton.status import RunStatus

__all__ = ["LiveProgress", "render_run", "render_runs"]

_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "interrupted": "red",
    "running": "yellow",
    "pending": "dim",
    "cancelled": "magenta",
    "skipped": "dim",
    "awaiting_approval": "bold cyan",
}
_MARK = {
    "succeeded": "✓",
    "failed": "✗",
    "interrupted": "!",
    "running": "▶",
    "pending": "·",
    "cancelled": "⊘",
    "awaiting_approval": "?",
}


def _status(value: str) -> Text:
    return Text(f"{_MARK.get(value, ' ')} {value}", style=_STYLE.get(value, ""))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _usd(value: float | None) -> str:
    return "?" if value is None else f"${value:.6f}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def render_runs(runs: list[Run]) -> Table:
    """A table of runs, newest first."""
    table = Table(title=f"{len(runs)} run(s), newest first", title_justify="left")
    for column in ("id", "pipeline", "status", "failed step", "created (UTC)", "duration"):
        table.add_column(column, no_wrap=column in ("id", "created (UTC)"))
    for run in runs:
        table.add_row(
            run.id,
            run.pipeline,
            _status(run.status.value),
            run.failed_step or "",
            _when(run.created_at),
            _ms(run.duration_ms),
        )
    return table


def render_run(run: Run, budgets: Sequence[Any] = ()) -> Group:
    """One run: a summary, its steps, the error of any failed step, and its output."""
    head = Table.grid(padding=(0, 2))
    head.add_row("run", Text(run.id, style="bold"))
    head.add_row("pipeline", run.pipeline)
    head.add_row("status", _status(run.status.value))
    head.add_row("created (UTC)", _when(run.created_at))
    if run.resumed_at:
        head.add_row("resumed (UTC)", _when(run.resumed_at))
    if run.duration_ms is not None:
        head.add_row("duration", _ms(run.duration_ms) + (" (since resumed)" if run.resumed_at else ""))
    head.add_row("tokens", f"{run.tokens.input} in / {run.tokens.output} out")
    head.add_row("cost", _usd(run.cost_usd))
    for budget in budgets:
        head.add_row("budget", budget.describe())
    if run.correlation_id and run.correlation_id != run.id:
        head.add_row("chain", f"{run.correlation_id} (baton trace {run.correlation_id})")
    if run.trigger_event:
        head.add_row("started by", f"event {run.trigger_event}")
    if run.emitted:
        head.add_row("emitted", "\n".join(f"event {i} {t}" for i, t in run.emitted))
    rejection = run.rejection
    if rejection is not None:
        why = rejection.reason or "(no reason given)"
        head.add_row(
            "rejected", Text(f"before step {rejection.step}, {_when(rejection.at)} UTC: {why}", style="magenta")
        )
    if run.cancel_requested and run.status is RunStatus.RUNNING:
        head.add_row("cancel", Text("requested: nothing after the current step will start", style="magenta"))
    steps = Table(title="steps", title_justify="left")
    for column in ("#", "step", "status", "attempts", "duration", "tokens in/out", "cost", "boundary tokens"):
        steps.add_column(column)
    for i, s in enumerate(run.steps, 1):
        steps.add_row(
            str(i), s.name, _status(s.status.value), str(s.attempts), _ms(s.duration_ms),
            f"{s.tokens.input}/{s.tokens.output}", _usd(s.cost_usd) if s.calls else "-",
            str(s.boundary_tokens) if s.boundary_tokens is not None else "-",
        )  # fmt: skip
    parts: list[Any] = [head, steps]
    calls = [(s.name, c) for s in run.steps for c in s.calls]
    if calls:
        table = Table(title="model calls", title_justify="left")
        for column in ("step", "attempt", "model", "tokens in/out", "latency", "cost", "outcome"):
            table.add_column(column)
        for name, c in calls:
            table.add_row(
                name, str(c.attempt), f"{c.provider}:{c.model}", f"{c.input_tokens}/{c.output_tokens}",
                _ms(c.latency_ms), _usd(c.cost_usd), c.outcome + (f": {c.error}" if c.error else ""),
            )  # fmt: skip
        parts.append(table)
    for s in run.steps:
        if s.error is not None:
            body: list[Any] = [Text(f"{s.error.type}: {s.error.message}", style="bold red")]
            if s.error.validation_errors:
                listed = "\n".join(f"- {e['field']}: {e['message']}" for e in s.error.validation_errors)
                body.append(Text(f"validation errors:\n{listed}", style="red"))
            if s.error.raw_output is not None:
                body.append(Text("the model's last answer:", style="bold"))
                body.append(Text(s.error.raw_output[:4000]))
            if s.error.traceback:
                body.append(Syntax(s.error.traceback.rstrip(), "pytb", word_wrap=True))
            parts.append(Panel(Group(*body), title=f"step '{s.name}' {s.status.value}", border_style="red"))
        retried = [a for a in s.attempt_errors if a.retried]
        if retried:
            lines = "\n".join(f"attempt {a.attempt}: {a.error.type}: {a.error.message}" for a in retried)
            parts.append(Panel(lines, title=f"step '{s.name}': attempts that were retried", border_style="yellow"))
        # What went wrong after the step's checkpoint (what follows it could not be planned) ended the run.
        after = [a for a in s.attempt_errors if not a.retried and s.status.value == "succeeded"]
        if after:
            lines = "\n".join(f"{a.error.type}: {a.error.message}" for a in after)
            parts.append(Panel(lines, title=f"step '{s.name}': what failed after its checkpoint", border_style="red"))
    if run.output is not None:
        parts.append(Panel(Syntax(json.dumps(run.output, indent=2), "json", word_wrap=True), title="output"))
    return Group(*parts)


class LiveProgress:
    """An Observer that shows each step's state as the run goes (a live table on a terminal, lines otherwise)."""

    def __init__(self, console: Console, step_names: list[str], title: str) -> None:
        self.console = console
        self.names = step_names
        self.title = title
        self.state = {name: ("pending", "") for name in step_names}
        self.started: dict[str, float] = {}
        self.run_id = ""
        self.live: Live | None = None
        if console.is_terminal:
            # get_renderable makes each refresh redraw, so a running step's clock ticks between events.
            self.live = Live(console=console, refresh_per_second=8, transient=False, get_renderable=self._view)

    def __enter__(self) -> LiveProgress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.refresh()
            self.live.__exit__(None, None, None)

    def run_created(self, run_id: str) -> None:
        """The run got its id."""
        self.run_id = run_id
        self._show(f"run {run_id}")

    def step_started(self, run_id: str, idx: int, name: str, attempt: int) -> None:
        """A step's attempt starts."""
        self.started[name] = time.perf_counter()
        self.state[name] = ("running", f"attempt {attempt}" if attempt > 1 else "")
        self._show(f"▶ {name}" + (f" (attempt {attempt})" if attempt > 1 else ""))

    def step_finished(self, run_id: str, idx: int, name: str, outcome: Outcome, duration_s: float) -> None:
        """A step's attempt ended."""
        took = _ms(duration_s * 1000)
        if isinstance(outcome, Succeeded):
            self.state[name] = ("succeeded", took)
            self._show(f"✓ {name} {took}")
        elif isinstance(outcome, RetryLater):
            note = f"{outcome.error.type}; retrying in {outcome.delay:.2f} s"
            self.state[name] = ("running", note)
            self._show(f"↻ {name}: {note}")
        elif isinstance(outcome, Failed):
            self.state[name] = ("failed", f"{outcome.error.type}: {outcome.error.message}"[:120])
            self._show(f"✗ {name}: {outcome.error.type}: {outcome.error.message}")

    def _show(self, line: str) -> None:
        if self.live:
            self.live.refresh()
        else:
            self.console.print(line, highlight=False, markup=False)

    def _view(self) -> Group:
        header = Text(f"{self.title}  run {self.run_id}" if self.run_id else self.title, style="bold")
        table = Table()
        for column in ("step", "status", ""):
            table.add_column(column)
        for name in self.names:
            status, note = self.state[name]
            if status == "running" and name in self.started and not note:
                note = _ms((time.perf_counter() - self.started[name]) * 1000)
            table.add_row(name, _status(status), note)
        return Group(header, table)


def render_demo(run: Run) -> Panel:
    """The demo's structured result: the extracted facts, the summaries and the label."""
    extraction = run.step("extract").output or {}
    summaries = run.step("summarise").output or {}
    label = run.output or {}
    lines = Text()
    lines.append("key facts\n", style="bold")
    for fact in extraction.get("key_facts", []):
        lines.append(f"  • {fact}\n")
    lines.append("summary\n", style="bold")
    lines.append(f"  {summaries.get('overall', '')}\n")
    if label:
        lines.append("label  ", style="bold")
        lines.append(f"{label.get('label')} (confidence {label.get('confidence')}), shown by {label.get('evidence')!r}")
    return Panel(lines, title=f"demo result, run {run.id}", border_style="green")
