"""Providers by name. The built-ins register through the same entry point group plugins use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from baton._extras import require
from baton.errors import DefinitionError

__all__ = ["check_model", "get_provider", "provider_names", "register_provider", "split_model"]

ENTRY_POINT_GROUP = "baton.providers"

_factories: dict[str, Callable[[], Any]] = {}
_instances: dict[str, Any] = {}
_lock = threading.Lock()
_scanned = False
# The built-in providers' names: loading one's class imports only baton's module, not its SDK (a plugin's
# module is imported when first used, as before).
_builtins: set[str] = set()


def register_provider(name: str, factory: Callable[[], Any]) -> None:
    """Make a provider available under `name` in this process (plugins use the entry point instead)."""
    with _lock:
        _factories[name] = factory
        _builtins.discard(name)
        _instances.pop(name, None)


def _scan() -> None:
    global _scanned
    if _scanned:
        return
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _factories:
            _factories[ep.name] = ep.load
            if ep.module.startswith("baton."):
                _builtins.add(ep.name)
    _scanned = True


def provider_names() -> list[str]:
    """Every provider name that can be used."""
    with _lock:
        _scan()
        return sorted(_factories)


def split_model(model: str) -> tuple[str, str]:
    """`"openai:gpt-4o-mini"` -> `("openai", "gpt-4o-mini")`; `"local"` -> `("local", "")`."""
    provider, _, name = model.partition(":")
    return provider, name


def check_model(model: str) -> None:
    """Fail at definition time when no provider answers to `model`'s prefix."""
    provider, _ = split_model(model)
    names = provider_names()
    if provider not in names:
        raise DefinitionError(
            f"unknown model {model!r}: no provider {provider!r}; valid providers: {', '.join(names)} "
            "(write e.g. 'local', 'openai:gpt-4o-mini' or 'anthropic:claude-3-5-haiku-latest')"
        )
    # A provider whose SDK is an extra says so when the agent is declared, not when its first step runs.
    declared = _factories[provider]() if provider in _builtins else None
    extra = getattr(declared, "extra", None)
    if isinstance(extra, str):
        require(extra, f"model {model!r}")


def get_provider(name: str) -> Any:
    """The provider instance called `name` (one per process)."""
    with _lock:
        _scan()
        provider = _instances.get(name)
        if provider is None:
            factory = _factories.get(name)
            if factory is None:
                raise DefinitionError(f"unknown provider {name!r}; valid providers: {', '.join(sorted(_factories))}")
            provider = factory()
            if isinstance(provider, type):  # an entry point loads the class; an instance is made once
                provider = provider()
            _instances[name] = provider
        return provider
