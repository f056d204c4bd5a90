"""Runtimes: where steps execute. Built-ins and plugins are found the same way, through the `baton.runtimes`
entry point group (a runtime's module is imported only when it is first asked for: Celery is an extra)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from baton.errors import UserError
from baton.runtime.base import Runtime

__all__ = ["Runtime", "get_runtime", "register_runtime", "runtime_names"]

_factories: dict[str, Callable[[], Any]] = {}
_instances: dict[str, Runtime] = {}


def register_runtime(name: str, factory: Callable[[], Any]) -> None:
    """Make a runtime available under `name` (plugins do this through the `baton.runtimes` entry point)."""
    _factories[name] = factory


def _load_plugins() -> None:
    for ep in entry_points(group="baton.runtimes"):
        if ep.name not in _factories:
            # Loaded when first used: a runtime whose extra is missing says so then, not when listed.
            _factories[ep.name] = lambda ep=ep: ep.load()()


def runtime_names() -> list[str]:
    """The names of every runtime that can be used."""
    _load_plugins()
    return sorted(_factories)


def get_runtime(name: str) -> Runtime:
    """The runtime called `name` (one instance per process)."""
    if name not in _instances:
        if name not in _factories:
            _load_plugins()
        factory = _factories.get(name)
        if factory is None:
            raise UserError(f"unknown runtime {name!r}; available: {', '.join(runtime_names())}")
        _instances[name] = factory()
    return _instances[name]
