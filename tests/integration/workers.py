"""Real `baton worker` processes for the tests, and waiting for what they do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Workers", "wait_for_file"]


class Workers:
    """`baton worker` processes, each in a process group of its own so that it can be killed whole."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, concurrency: int = 2, pool: str = "prefork", imports: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        log = self.folder / f"worker-{len(self.procs)}.log"
        extra = [arg for module in imports for arg in ("--import", module)]
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "baton",
                "worker",
                "-c",
                str(concurrency),
                "--pool",
                pool,
                "--loglevel",
                "info",
                *extra,
            ],
            env=self.env,
            stdout=open(log, "wb"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while b" ready." not in log.read_bytes():
            assert proc.poll() is None, f"the worker exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"the worker did not start: {log.read_text()}"
            time.sleep(0.05)
        return proc

    def group_of(self, pid: int) -> subprocess.Popen[bytes]:
        group = os.getpgid(pid)
        return next(p for p in self.procs if p.pid == group)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("worker-*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def wait_for_file(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)
    time.sleep(0.05)  # let the writer finish the file
    return path.read_text()
