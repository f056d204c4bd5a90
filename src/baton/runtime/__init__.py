"""Runtimes: where steps execute. Built-ins and plugins register by name in one table."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from baton.errors import UserError

__all__ = ["get_runtime", "register_runtime", "runtime_names"]

_factories: dict[str, Callable[[], Any]] = {}
_instances: dict[str, Any] = {}


def register_runtime(name: str, factory: Callable[[], Any]) -> None:
    """Make a runtime available under `name` (plugins do this through the `baton.runtimes` entry point)."""
    _factories[name] = factory


def _load_plugins() -> None:
    for ep in entry_points(group="baton.runtimes"):
        if ep.name not in _factories:
            _factories[ep.name] = ep.load()


def runtime_names() -> list[str]:
    """The names of every runtime that can be used."""
    _load_plugins()
    return sorted(_factories)


def get_runtime(name: str) -> Any:
    """The runtime called `name` (one instance per process)."""
    if name not in _instances:
        if name not in _factories:
            _load_plugins()
        factory = _factories.get(name)
        if factory is None:
            raise UserError(f"unknown runtime {name!r}; available: {', '.join(runtime_names())}")
        _instances[name] = factory()
    return _instances[name]
