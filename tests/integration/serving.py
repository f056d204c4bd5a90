"""`baton serve` in a process of its own, for the tests that talk to it over HTTP or through a browser."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`baton serve ARGS` on a free port, answering once this returns; its output (uvicorn's access log
    included) goes to `log`."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "baton", "serve", "--port", str(self.port), *args],
            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/login", timeout=1)
                return
            except httpx.TransportError:
                assert self.proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)

    def stop(self) -> str:
        """Stop the server as Ctrl-C would; returns what it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL the server's whole process group: a crash."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
