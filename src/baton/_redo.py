"""What a retry from a step would do again: the side effects that the steps it re-runs already did.

A retry from a step is a person asking for that step again, so its effects are done again under a new key
(see `baton.effects.effect_key`): the e-mail is sent a second time. That is what was asked for, but rarely
what was meant, so every surface (the CLI, the API, the dashboard) names those effects and acts only on an
explicit yes.
"""

from __future__ import annotations

from typing import Any

from baton.errors import EffectsWouldRepeat
from baton.patterns.plan import rewind_plan
from baton.run import Run
from baton.store import RunStore
from baton.store.effects import EffectRecord

__all__ = ["describe_effects", "effects_redone", "latest_effects", "refuse_redo"]


def effects_redone(store: RunStore, run: Run, pattern: Any, step: str) -> list[EffectRecord]:
    """The side effects that retrying `run` from `step` would do again: the latest of each effect of the steps
    that run again, done or uncertain (it may have happened), in step order. Refuses what cannot be retried."""
    again = set(rewind_plan(run, pattern, step))
    return [e for e in latest_effects(store, run.id) if e.step_idx in again]


def latest_effects(store: RunStore, run_id: str) -> list[EffectRecord]:
    """The run's side effects, the latest of each (an earlier retry's generation is the one a retry repeats),
    in step order."""
    latest: dict[tuple[int, str], EffectRecord] = {}
    for found in store.effects.list(run_id):  # newest first
        latest.setdefault((found.step_idx, found.name), found)
    return sorted(latest.values(), key=lambda e: (e.step_idx, e.name))


def describe_effects(run: Run, effects: list[EffectRecord]) -> str:
    """The effects in one line: which effect of which step, its key, and when it was done."""
    parts = []
    for e in effects:
        name = run.steps[e.step_idx].name if e.step_idx < len(run.steps) else f"#{e.step_idx}"
        if e.status == "done" and e.finished_at is not None:
            when = f"done {e.finished_at:%Y-%m-%d %H:%M:%S} UTC"
        else:
            when = f"started {e.started_at:%Y-%m-%d %H:%M:%S} UTC, maybe done"
        parts.append(f"the effect '{e.name}' of step '{name}' (key {e.key}, {when})")
    return "; ".join(parts)


def refuse_redo(
    store: RunStore,
    run: Run,
    pattern: Any,
    step: str,
    *,
    confirm_with: str,
    effects: list[EffectRecord] | None = None,
) -> None:
    """Raise `EffectsWouldRepeat` when retrying `run` from `step` would do side effects again (`effects`, when
    the caller looked them up already); `confirm_with` says how the person says yes on this surface."""
    if effects is None:
        effects = effects_redone(store, run, pattern, step)
    if effects:
        raise EffectsWouldRepeat(
            f"retrying run {run.id} from step '{step}' does again what it already did: "
            f"{describe_effects(run, effects)}; {confirm_with} to do it again"
        )
