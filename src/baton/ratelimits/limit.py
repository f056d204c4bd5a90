"""Limits on model calls: declared in code with `limit()` or by `BATON_LIMITS`, found for a call by `limits_for()`.

A limit's target is `"provider:model"` (one model) or `"provider"` (every model of it); a call obeys both the
limits of its model and those of its provider. Declaring a target again replaces its limit; a target both
declared in code and set in `BATON_LIMITS` takes the code's limit (the setting fills in what code leaves out).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass

from baton.errors import DefinitionError, UserError
from baton.settings import Settings, current_settings

__all__ = ["Limit", "clear_limits", "declared_limits", "fingerprint", "limit", "limits_for", "parse_limits"]

_FIELDS = ("rpm", "tpm", "concurrent")


@dataclass(frozen=True, slots=True)
class Limit:
    """What a provider (or one of its models) allows: requests and tokens per minute, and calls in flight.

    With `per_key`, each API key has a limit of its own (known by its fingerprint, never by the key).
    """

    target: str
    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None
    per_key: bool = False

    @property
    def provider(self) -> str:
        """The provider the limit is on."""
        return self.target.partition(":")[0]

    @property
    def model(self) -> str | None:
        """The model the limit is on, or None for every model of its provider."""
        _, colon, model = self.target.partition(":")
        return model if colon else None


def _checked(target: object, values: dict[str, object], per_key: object, where: str) -> Limit:
    """The limit, or a `DefinitionError` naming `where` (the declaration or the setting) and the field."""
    if not isinstance(target, str) or not target or any(c.isspace() or c == ";" for c in target):
        raise DefinitionError(f"{where}: the target {target!r} is not 'provider' or 'provider:model'")
    provider, colon, model = target.partition(":")
    if colon and not model:
        raise DefinitionError(f"{where}: the target {target!r} names no model after the colon (write {provider!r})")
    from baton.providers.registry import provider_names  # the registry scans entry points: only when declared

    names = provider_names()
    if provider not in names:
        raise DefinitionError(f"{where}: no provider {provider!r}; valid providers: {', '.join(names)}")
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DefinitionError(f"{where}: {name}={value!r} is not a positive whole number")
    if all(value is None for value in values.values()):
        raise DefinitionError(f"{where}: give at least one of rpm, tpm or concurrent")
    if not isinstance(per_key, bool):
        raise DefinitionError(f"{where}: per_key={per_key!r} is not True or False")
    return Limit(target, **values, per_key=per_key)  # type: ignore[arg-type]


_declared: dict[str, Limit] = {}
_lock = threading.Lock()
# Bumped by every declaration: the index `limits_for` reads is rebuilt when it moved.
_version = 0


def limit(
    target: str, *, rpm: int | None = None, tpm: int | None = None, concurrent: int | None = None, per_key: bool = False
) -> Limit:
    """Limit model calls to `target` ("provider" or "provider:model") in every process sharing the store or
    broker: `rpm` requests and `tpm` tokens a minute, `concurrent` calls in flight (each optional, one needed)."""
    global _version
    declared = _checked(target, {"rpm": rpm, "tpm": tpm, "concurrent": concurrent}, per_key, f"baton.limit({target!r})")
    with _lock:
        _declared[target] = declared
        _version += 1
    return declared


def clear_limits() -> None:
    """Forget every limit declared in code (those of `BATON_LIMITS` stay)."""
    global _version
    with _lock:
        _declared.clear()
        _version += 1


def declared_limits(settings: Settings | None = None) -> list[Limit]:
    """Every limit in force: `BATON_LIMITS`'s, then code's (code's wins for the same target)."""
    configured = (settings or current_settings()).providers.limits
    return list(_index(_version, configured)[1])


def limits_for(provider: str, model: str, *, settings: Settings | None = None) -> list[Limit]:
    """The limits a call of `model` on `provider` obeys: its model's, then its provider's.

    With `settings` given and no limit declared it costs a few hundred nanoseconds; without, reading the
    process's settings costs tens of microseconds more (they are compared with the environment).
    """
    configured = (settings or current_settings()).providers.limits
    if not _declared and not configured:
        return []
    table = _index(_version, configured)[0]
    found = [table[provider, model]] if model and (provider, model) in table else []
    everywhere = table.get((provider, None))
    return [*found, everywhere] if everywhere is not None else found


@functools.lru_cache(maxsize=8)
def _index(version: int, configured: str) -> tuple[dict[tuple[str, str | None], Limit], tuple[Limit, ...]]:
    # Keyed on the version and the setting's text: a declaration or a changed setting makes a new one.
    merged = {found.target: found for found in parse_limits(configured)}
    with _lock:
        merged |= _declared
    return {(found.provider, found.model): found for found in merged.values()}, tuple(merged.values())


def fingerprint(api_key: str) -> str:
    """What stands for an API key in a `per_key` limit's shared state: a short SHA-256 prefix, never the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def parse_limits(text: str) -> tuple[Limit, ...]:
    """The limits of a `BATON_LIMITS` value: entries apart by `;` (or new lines), each a target followed by
    `rpm=N`, `tpm=N`, `concurrent=N` and the flag `per_key`, e.g. `openai:gpt-4o-mini rpm=500; anthropic rpm=50`.

    A bad entry raises a `UserError` naming BATON_LIMITS and the entry.
    """
    found: dict[str, Limit] = {}
    for entry in text.replace("\n", ";").split(";"):
        words = entry.split()
        if not words:
            continue
        where = f"BATON_LIMITS entry {entry.strip()!r}"
        values: dict[str, object] = {}
        per_key = False
        for word in words[1:]:
            name, equals, raw = word.partition("=")
            if word == "per_key":
                per_key = True
            elif name in _FIELDS and equals and name not in values:
                values[name] = int(raw) if raw.isdecimal() else raw
            elif name in values:
                raise UserError(f"{where}: {name} is given twice")
            else:
                raise UserError(f"{where}: {word!r} is not rpm=N, tpm=N, concurrent=N or per_key")
        if words[0] in found:
            raise UserError(f"{where}: {words[0]!r} is limited twice in BATON_LIMITS")
        try:
            found[words[0]] = _checked(words[0], {f: values.get(f) for f in _FIELDS}, per_key, where)
        except DefinitionError as exc:
            raise UserError(str(exc)) from None
    return tuple(found.values())
