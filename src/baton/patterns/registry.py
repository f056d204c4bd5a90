"""Patterns by name, so that a run recorded in the store can find its code again."""

from __future__ import annotations

from typing import Any

from baton._loader import load_target
from baton.errors import RunNotResumable

__all__ = ["find_pattern", "register", "registered"]

_patterns: dict[str, Any] = {}


def register(pattern: Any) -> None:
    """Remember a pattern under its name (the newest definition wins, as on a module reload)."""
    _patterns[pattern.name] = pattern


def registered(name: str) -> Any | None:
    """The pattern called `name` if this process defines it (nothing is imported)."""
    return _patterns.get(name)


def find_pattern(name: str, target: str | None) -> Any:
    """The pattern called `name`: defined in this process, or imported from the run's recorded target."""
    pattern = _patterns.get(name)
    if pattern is not None:
        return pattern
    if not target:
        raise RunNotResumable(
            f"pattern '{name}' is not defined in this process and the run recorded no target to import it "
            "from; import the module that defines it, or call <pattern>.resume(run_id)"
        )
    pattern = load_target(target)
    # The import may have registered it (a subscriber is found through its step).
    pattern = _patterns.get(name, pattern)
    if getattr(pattern, "name", None) != name or not hasattr(pattern, "step_names"):
        raise RunNotResumable(f"target {target!r} holds {pattern!r}, not the pattern '{name}' the run recorded")
    return pattern
