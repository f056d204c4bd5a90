"""Who runs a run: an owner id per process, and a test of whether that process still lives."""

from __future__ import annotations

import functools
import os
import socket

__all__ = ["owner_alive", "this_owner"]


def _start_time(pid: int) -> str | None:
    # The start time tells a live process from a new one that was given a dead one's pid; a zombie (killed,
    # not yet reaped by its parent) counts as dead.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return "zombie" if fields[0] in ("Z", "X") else fields[19]


@functools.cache
def _machine() -> str:
    # A hostname alone is not enough: containers can share one while each has its own process ids. Two
    # processes can check each other's pids only within the same pid namespace on the same host.
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "0"
    return f"{socket.gethostname()}/{namespace}"


def this_owner() -> str:
    """The owner id of this process: `host/pid-namespace:pid:start`."""
    return _owner_of(os.getpid())


@functools.cache
def _owner_of(pid: int) -> str:
    # Keyed by pid, so that a forked child (a Celery prefork worker) gets its own id.
    return f"{_machine()}:{pid}:{_start_time(pid) or '?'}"


def owner_alive(owner: str) -> bool | None:
    """True or False for an owner on this machine; None when it lives elsewhere (then only its lease tells)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3:
        return None
    machine, pid_text, start = parts
    if machine != _machine():
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    actual = _start_time(pid)
    if actual == "zombie":
        return False
    if actual is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return start == "?"
    return start in ("?", actual)
