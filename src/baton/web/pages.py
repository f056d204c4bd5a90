"""What the dashboard's pages are drawn with: the Jinja templates and their filters, and the run page's lanes."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files

from jinja2 import Environment, FunctionLoader, select_autoescape

from baton._effect_result import describe
from baton.patterns.base import parallel_steps
from baton.run import Run, StepRecord
from baton.status import StepStatus

__all__ = ["Bar", "Lane", "lanes", "templates"]


def _template_source(name: str) -> str:
    return files("baton.web").joinpath("templates", name).read_text(encoding="utf-8")


@functools.cache
def templates() -> Environment:
    """The dashboard's Jinja environment: templates shipped in the package, HTML escaped."""
    env = Environment(loader=FunctionLoader(_template_source), autoescape=select_autoescape(default=True))
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["cost"] = _cost
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)
    env.filters["shape"] = describe  # an effect's result schema, in a few words
    return env


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def _cost(usd: float | None) -> str:
    if usd is None:
        return "unknown"
    return f"${usd:.4f}" if usd else "$0"


@dataclass(frozen=True)
class Bar:
    """Where a step's bar sits on the run's time axis, in percent of the axis."""

    left: float
    width: float
    running: bool


@dataclass(frozen=True)
class Lane:
    """One row of the run page: a step, its bar, and its place (among parallel branches or not)."""

    idx: int
    step: StepRecord
    bar: Bar | None
    group: str | None  # "workers" for the steps its pattern runs as parallel branches, side by side


def lanes(run: Run, kind: str | None, now: datetime) -> tuple[list[Lane], float]:
    """The run's steps in order with their bars on one shared time axis, and the axis' length in ms."""
    start = run.started_at or run.created_at
    end = run.finished_at or now
    for s in run.steps:
        if s.finished_at is not None and s.finished_at > end:
            end = s.finished_at
    span = max((end - start).total_seconds() * 1000, 1.0)
    side_by_side = parallel_steps(kind, len(run.steps))
    out = []
    for idx, s in enumerate(run.steps):
        bar = None
        if s.started_at is not None:
            finish = s.finished_at or (now if s.status is StepStatus.RUNNING else s.started_at)
            left = max((s.started_at - start).total_seconds() * 1000, 0.0) / span * 100
            width = max((finish - s.started_at).total_seconds() * 1000 / span * 100, 0.4)
            left = min(left, 99.6)
            bar = Bar(left=round(left, 2), width=round(min(width, 100 - left), 2), running=s.finished_at is None)
        group = "workers" if idx in side_by_side else None
        out.append(Lane(idx=idx, step=s, bar=bar, group=group))
    return out, span
