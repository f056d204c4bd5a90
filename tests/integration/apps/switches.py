"""Switches the test apps' steps obey, through files in BATON_TEST_DIR (see `controlled.py`)."""

import os
import signal
import time
from pathlib import Path

from baton import TransientError


def folder() -> Path:
    return Path(os.environ["BATON_TEST_DIR"])


def _control(name: str) -> None:
    """Count an execution of `name`, then fail or block if its switch file says so."""
    here = folder()
    with open(here / f"{name}.count", "a") as f:
        f.write("x\n")
    once = here / f"{name}.crash_once"
    if once.exists():
        once.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    if (here / f"{name}.crash").exists():
        os.kill(os.getpid(), signal.SIGKILL)  # what an out-of-memory kill or a segfault looks like
    fail = here / f"{name}.fail"
    if fail.exists():
        raise ValueError(fail.read_text().strip() or f"{name} was told to fail")
    block = here / f"{name}.block"
    if block.exists():
        (here / f"{name}.started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while block.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def _transient(name: str) -> None:
    """Fail with a TransientError while `<name>.transient` holds a count above zero (counting it down)."""
    left = folder() / f"{name}.transient"
    if left.exists() and int(left.read_text() or 0) > 0:
        left.write_text(str(int(left.read_text()) - 1))
        raise TransientError(f"{name}: the source is busy, try again")
