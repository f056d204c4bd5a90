import os
import socket
import subprocess
import sys

import pytest

from netguard import NetworkBlocked


@pytest.fixture
def guard_log(no_network_beyond_loopback):
    """Read the guard's log, and take back what these tests provoke on purpose (so they can pass)."""
    before = no_network_beyond_loopback.stat().st_size
    yield lambda: no_network_beyond_loopback.read_text()[before:]
    with open(no_network_beyond_loopback, "r+") as f:
        f.truncate(before)


def test_a_name_beyond_loopback_cannot_even_be_looked_up(guard_log):
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("example.com", 80), timeout=1)
    assert "example.com" in guard_log()


def test_an_address_beyond_loopback_cannot_be_connected_to(guard_log):
    sock = socket.socket()
    try:
        with pytest.raises(NetworkBlocked):
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed, and refused before any packet leaves
    finally:
        sock.close()
    assert "192.0.2.1" in guard_log()


def test_a_process_started_by_a_test_is_guarded_too(guard_log):
    code = (
        "import socket\n"
        "try:\n    socket.getaddrinfo('example.org', 443)\n"
        "except Exception as e:\n    print(type(e).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "NetworkBlocked"
    assert "example.org" in guard_log()


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        socket.create_connection(server.getsockname(), timeout=1).close()
    finally:
        server.close()
