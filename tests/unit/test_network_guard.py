import socket

import pytest

from tests.conftest import NetworkBlocked


def test_a_name_beyond_loopback_cannot_even_be_looked_up():
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("example.com", 80), timeout=1)


def test_an_address_beyond_loopback_cannot_be_connected_to():
    sock = socket.socket()
    try:
        with pytest.raises(NetworkBlocked):
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed, and refused before any packet leaves
    finally:
        sock.close()


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        socket.create_connection(server.getsockname(), timeout=1).close()
    finally:
        server.close()
