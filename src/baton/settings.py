"""One typed settings object, read from the environment (prefix `BATON_`) when asked for, never at import.

`Settings.from_env()` reads every `BATON_` variable baton knows, in one place; a bad value fails there,
naming the variable. Entry points (the CLI) build one, apply their flags with `dataclasses.replace`, install
it with `use_settings` and pass it down. Code with no caller to pass settings (a provider made by the
registry, an agent's default model, a celery task) asks `current_settings()`: the installed settings, else
the environment's, parsed again only when a `BATON_` variable changed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from baton._urls import mask_url
from baton.errors import UserError

__all__ = [
    "MailSettings",
    "ProviderSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "WorkerSettings",
    "current_settings",
    "use_settings",
]


def _var(
    name: str,
    default: Any,
    *choices: str,
    minimum: float = 0,
    secret: bool = False,
    check: Callable[[str], object] | None = None,
) -> Any:
    """A field read from the environment variable `name`; a value outside `choices` (when given), a number
    below `minimum`, or text that `check` refuses (it raises a `UserError` naming the variable), is refused;
    a `secret` is left out of the settings' repr."""
    metadata = {"env": name, "choices": choices, "minimum": minimum, "check": check}
    return field(default=default, repr=not secret, metadata=metadata)


def _limits(raw: str) -> object:
    # Read here so that a bad BATON_LIMITS fails when the settings are read, not at the first model call.
    from baton.ratelimits.limit import parse_limits

    return parse_limits(raw)


class _Section:
    """A section's repr: URLs without their secrets (`mask_url`), secret fields left out."""

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):  # type: ignore[arg-type]
            if not f.repr:
                continue
            value = getattr(self, f.name)
            shown.append(f"{f.name}={mask_url(value)!r}" if isinstance(value, str) else f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class StoreSettings(_Section):
    """The run store."""

    database_url: str = _var("BATON_DATABASE_URL", "")
    # Seconds a running run's claim holds without a heartbeat before another process may call it interrupted.
    lease_seconds: float = _var("BATON_LEASE_SECONDS", 60.0)
    # Seconds a run waits for a store in trouble (a database restarting) before giving up on the call.
    retry_seconds: float = _var("BATON_STORE_RETRY_SECONDS", 60.0)

    def resolved_url(self) -> str:
        """The database URL, defaulting to a SQLite file under `./.baton/`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path.cwd() / '.baton' / 'baton.db'}"


@dataclass(frozen=True, repr=False)
class WorkerSettings(_Section):
    """The celery runtime and `baton worker`."""

    broker_url: str = _var("BATON_BROKER_URL", "redis://127.0.0.1:6379/0")
    # Where Celery chords count their finished members (default: the broker's Redis).
    result_backend: str = _var("BATON_RESULT_BACKEND", "")
    # Seconds before Redis gives an unacknowledged message (its worker's machine vanished) to another worker.
    # Longer than any retry countdown; a step running longer is delivered twice, and the second waits on the
    # first's lease instead of running it again.
    visibility_timeout: float = _var("BATON_VISIBILITY_TIMEOUT", 600.0)
    # How a celery worker goes from one pipeline step to the next: "run" goes on in the same task (each step
    # still claimed and checkpointed on its own), "step" queues each step as a task of its own.
    celery_hop: str = _var("BATON_CELERY_HOP", "run", "run", "step")
    # Seconds a celery run may sit pending or between steps, no worker holding it and the queue empty, before
    # the sweeper takes its message for lost and queues it again (past BATON_VISIBILITY_TIMEOUT, even with a
    # queue that never empties).
    requeue_after: float = _var("BATON_REQUEUE_AFTER", 15.0)
    # Steps one worker executes at once. 0: BATON_MAX_IN_FLIGHT on the threads pool, one per CPU on prefork.
    concurrency: int = _var("BATON_WORKER_CONCURRENCY", 0)
    # threads: many I/O-bound steps (model calls) in one process; prefork: one CPU-bound step per process.
    pool: str = _var("BATON_WORKER_POOL", "threads", "threads", "prefork", "solo")


@dataclass(frozen=True, repr=False)
class ServerSettings(_Section):
    """`baton serve`."""

    host: str = _var("BATON_HOST", "127.0.0.1")
    port: int = _var("BATON_PORT", 8000)
    # Empty: reading is open on loopback and the server makes a token of its own for changes.
    dashboard_token: str = _var("BATON_DASHBOARD_TOKEN", "", secret=True)


@dataclass(frozen=True, repr=False)
class ProviderSettings(_Section):
    """The model providers. API keys are not here: they stay in the vendors' own variables, never stored."""

    # The model of agents that name none.
    model: str = _var("BATON_MODEL", "local")
    # Empty: the vendor's own API.
    openai_base_url: str = _var("BATON_OPENAI_BASE_URL", "")
    openai_timeout: float = _var("BATON_OPENAI_TIMEOUT", 120.0)
    openai_response_format: str = _var("BATON_OPENAI_RESPONSE_FORMAT", "json_schema", "json_schema", "json_object")
    anthropic_base_url: str = _var("BATON_ANTHROPIC_BASE_URL", "")
    anthropic_timeout: float = _var("BATON_ANTHROPIC_TIMEOUT", 120.0)
    # 0: one thread per CPU.
    local_threads: int = _var("BATON_LOCAL_THREADS", 0)
    # Rate limits and concurrency caps on model calls, shared by every process on the same store or broker:
    # "openai:gpt-4o-mini rpm=500 tpm=200000 concurrent=8; anthropic rpm=50" (see `baton.limit`).
    limits: str = _var("BATON_LIMITS", "", check=_limits)
    # Where the processes share them: "auto" (celery workers through their broker's Redis, the others through
    # the store), or one of the two for all, when local runs and celery workers call the same models at once.
    limits_backend: str = _var("BATON_LIMITS_BACKEND", "auto", "auto", "store", "redis")


@dataclass(frozen=True, repr=False)
class MailSettings(_Section):
    """`baton.mail.send_email`."""

    # smtp://[user:password@]host[:port][?from=...&starttls=1], or smtps://...; empty: no server.
    smtp_url: str = _var("BATON_SMTP_URL", "", secret=True)


@dataclass(frozen=True)
class Settings:
    """baton's settings, one section per part of baton; each field names its variable in `metadata["env"]`."""

    store: StoreSettings = field(default_factory=StoreSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    # Where `baton run` and `baton serve` execute steps: local or celery (a plugin's runtime name too).
    runtime: str = _var("BATON_RUNTIME", "local")
    # Runs one process executes at once (more wait, pending, and start in order); also the size of the pool
    # of threads its sync steps run on.
    max_in_flight: int = _var("BATON_MAX_IN_FLIGHT", 256, minimum=1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `env` (default: `os.environ`); an empty variable means its default.

        A value that is not of its setting's kind raises a `UserError` naming the variable.
        """
        env = os.environ if env is None else env
        sections = {f.name: f.default_factory(**_values(f.default_factory, env)) for f in _sections()}
        return cls(**sections, **_values(cls, env))

    def variables(self) -> dict[str, Any]:
        """Every setting by its environment variable's name (secrets included: not for printing)."""
        out = {}
        for part in (self, *(getattr(self, f.name) for f in _sections())):
            out |= {f.metadata["env"]: getattr(part, f.name) for f in fields(part) if "env" in f.metadata}
        return out


def _sections() -> list[Any]:
    return [f for f in fields(Settings) if f.default_factory is not MISSING]


def _values(cls: Any, env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for f in fields(cls):
        name = f.metadata.get("env")
        raw = env.get(name) if name else None
        if raw is None or raw == "":
            continue
        values[f.name] = _parse(name, raw, type(f.default), f.metadata["choices"], f.metadata["minimum"])
        if f.metadata["check"] is not None:
            f.metadata["check"](raw)
    return values


def _parse(name: str, raw: str, kind: type, choices: tuple[str, ...], minimum: float) -> Any:
    if kind is str:
        if choices and raw not in choices:
            raise UserError(f"{name}={raw!r}: use one of {', '.join(repr(c) for c in choices)}")
        return raw
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise UserError(f"{name}={raw!r} is not {what}") from None
    if value < minimum:
        raise UserError(f"{name}={raw!r} cannot be negative" if minimum == 0 else f"{name}={raw!r}: at least {minimum}")
    return value


_installed: Settings | None = None
_from_env: tuple[tuple[tuple[str, str], ...], Settings] | None = None
_lock = threading.Lock()


def _after_fork() -> None:
    # A thread of the parent may have held the lock at the fork; the child's only thread must not wait for it.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def current_settings() -> Settings:
    """This process's settings: the ones `use_settings` installed, else the environment's.

    The environment's are parsed again only when a `BATON_` variable changed, so a process (a test, a
    notebook) that sets one later is heard, as it was when every module read its own variable.
    """
    global _from_env
    if _installed is not None:
        return _installed
    snapshot = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("BATON_")))
    with _lock:
        if _from_env is None or _from_env[0] != snapshot:
            _from_env = (snapshot, Settings.from_env(dict(snapshot)))
        return _from_env[1]


def use_settings(settings: Settings | None) -> Settings | None:
    """Make `settings` this process's (None: the environment's again); returns the ones it replaces."""
    global _installed
    with _lock:
        previous, _installed = _installed, settings
    return previous
