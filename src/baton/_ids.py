"""Run ids: time-ordered, so that newest-first listing and keyset paging follow the id."""

from __future__ import annotations

import os
import time

__all__ = ["new_run_id"]


def new_run_id() -> str:
    """A 32-hex-digit id: 48 bits of milliseconds since the epoch, then 80 random bits (like UUIDv7)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
