"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database per test)."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from baton import RunStore

POSTGRES_ADMIN_URL = os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlocked(RuntimeError):
    """A test tried to reach beyond this machine's loopback."""


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str) or host in LOOPBACK_NAMES:
        return host in LOOPBACK_NAMES
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def no_network_beyond_loopback() -> Iterator[None]:
    """Every test talks only to 127.0.0.1/::1: a connection or a name lookup elsewhere fails the test."""
    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):  # type: ignore[index]
            raise NetworkBlocked(f"tests may not connect to {address!r}: only loopback is allowed")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            raise NetworkBlocked(f"tests may not look up {host!r}: only loopback is allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
            real_connect,
            real_connect_ex,
            real_getaddrinfo,
        )  # type: ignore[method-assign]


def _services_optional() -> bool:
    # In CI a missing service must fail the run, never skip it; locally, skipping is opt-in.
    return os.environ.get("BATON_TEST_SKIP_SERVICES") == "1" and os.environ.get("CI") != "true"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/baton.db"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"baton_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if _services_optional():
            pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Each test that takes this runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(sqlite_url) -> Iterator[RunStore]:
    """A real store on a SQLite file (embedded, so unit tests can use it without a server)."""
    s = RunStore(sqlite_url)
    yield s
    s.close()


@pytest.fixture
def any_store(database_url) -> Iterator[RunStore]:
    s = RunStore(database_url)
    yield s
    s.close()
