"""One typed settings object, read from the environment (prefix `BATON_`) when asked for, never at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """baton's settings; each field `x` comes from the environment variable `BATON_X`."""

    database_url: str = ""
    broker_url: str = "redis://127.0.0.1:6379/0"
    model: str = "local"
    # Seconds a running run's claim holds without a heartbeat before another process may call it interrupted.
    lease_seconds: float = 60.0
    # Where Celery chords count their finished members (default: the broker's Redis).
    result_backend: str = ""
    # Seconds before Redis gives an unacknowledged message (its worker's machine vanished) to another worker.
    # Longer than any retry countdown; a step running longer is delivered twice, and the second waits on the
    # first's lease instead of running it again.
    visibility_timeout: float = 600.0
    # How a celery worker goes from one pipeline step to the next: "run" goes on in the same task (each step
    # still claimed and checkpointed on its own), "step" queues each step as a task of its own.
    celery_hop: str = "run"
    # The SMTP server of `baton.mail.send_email`: smtp://[user:password@]host[:port][?from=...&starttls=1].
    smtp_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `env` (default: `os.environ`)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"BATON_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = float(raw) if f.type == "float" else raw
        return cls(**values)  # type: ignore[arg-type]

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under `./.baton/`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path.cwd() / '.baton' / 'baton.db'}"
