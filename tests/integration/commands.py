"""Driving the `baton` command as a user does, and reading what the test apps' steps counted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def baton(env, *args, check=None, cwd=None):
    """Run `baton ARGS` in a process of its own; with `check`, assert its exit code."""
    result = subprocess.run(
        [sys.executable, "-m", "baton", *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd
    )
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def control(env) -> Path:
    """The folder of the test apps' switch files (BATON_TEST_DIR)."""
    return Path(env["BATON_TEST_DIR"])


def counts(env) -> dict[str, int]:
    """How many times each step of the test apps started."""
    return {p.stem: len(p.read_text().splitlines()) for p in control(env).glob("*.count")}


def show(env, run_id) -> dict:
    """`baton show RUN_ID --json`, read."""
    return json.loads(baton(env, "show", run_id, "--json", check=0).stdout)


def wait_until_finished(env, run_id, timeout: float = 60) -> dict:
    """The run as `baton show` reads it once it no longer runs (a failed assertion after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        run = show(env, run_id)
        if run.get("status") not in ("pending", "running", None):
            return run
        assert time.monotonic() < deadline, f"run still {run.get('status')}: {json.dumps(run, indent=1)[:3000]}"
        time.sleep(0.1)
