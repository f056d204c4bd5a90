"""Run ids: time-ordered, so that newest-first listing and keyset paging follow the id."""

from __future__ import annotations

import os
import threading
import time

from baton.errors import UserError

__all__ = ["MIN_PREFIX_LENGTH", "RUN_ID_LENGTH", "check_prefix", "is_prefix", "new_run_id"]

_lock = threading.Lock()
_last_ms = 0
_seq = 0


# Every run id has this many hex digits; a shorter one names a run by prefix.
RUN_ID_LENGTH = 32

# An id begins with its creation time: its first 6 hex digits are the same for every run of the same 4.7 hours,
# its first 8 for those of the same minute. A prefix names a run by the digits after those.
MIN_PREFIX_LENGTH = 8

_HEX = frozenset("0123456789abcdef")


def is_prefix(text: str) -> bool:
    """True when `text` may be the start of an id (hex digits, shorter than a whole id)."""
    return len(text) < RUN_ID_LENGTH and set(text) <= _HEX


def check_prefix(text: str, what: str = "run", error: type[UserError] = UserError) -> None:
    """Refuse a prefix too short to name one id (`what`: "run" or "event"), saying how long it must be."""
    if len(text) < MIN_PREFIX_LENGTH and set(text) <= _HEX:
        raise error(f"{what} id prefix {text!r} is too short: give at least {MIN_PREFIX_LENGTH} characters")


def new_run_id() -> str:
    """A 32-hex-digit id, like a UUIDv7: 48 bits of milliseconds, a 16-bit sequence, 64 random bits.

    Within one process ids only grow, even for many runs in the same millisecond.
    """
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms, _seq = _last_ms, _seq + 1
            if _seq > 0xFFFF:
                ms, _seq = ms + 1, 0
        else:
            _seq = int.from_bytes(os.urandom(1), "big")  # a random start keeps processes apart
        _last_ms = ms
        return f"{ms:012x}{_seq:04x}{os.urandom(8).hex()}"
