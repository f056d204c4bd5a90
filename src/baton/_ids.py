"""Run ids: time-ordered, so that newest-first listing and keyset paging follow the id."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["RUN_ID_LENGTH", "new_run_id"]

_lock = threading.Lock()
_last_ms = 0
_seq = 0


# Every run id has this many hex digits; a shorter one names a run by prefix.
RUN_ID_LENGTH = 32


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
