"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database per test)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from baton import RunStore
from tests import parallel

POSTGRES_ADMIN_URL = os.environ.get("BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


NETGUARD = Path(__file__).parent / "netguard"
sys.path.insert(0, str(NETGUARD))


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    parallel.group(items)  # before xdist's own hook reads the groups
    yield
    parallel.name_groups_in_ids(config, items)  # after it


@pytest.fixture(autouse=True, scope="session")
def no_network_beyond_loopback(tmp_path_factory) -> Iterator[Path]:
    """Every test, and every process it starts, talks only to loopback (see tests/netguard)."""
    log = tmp_path_factory.mktemp("netguard") / "blocked.log"
    log.touch()
    os.environ["BATON_TEST_NETGUARD_LOG"] = str(log)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), os.environ.get("PYTHONPATH")]))
    from netguard import install

    install(str(log))
    yield log


@pytest.fixture(autouse=True)
def fail_on_blocked_network(no_network_beyond_loopback) -> Iterator[None]:
    """A test during which anything tried to leave loopback fails, even if the attempt's error was caught."""
    log = no_network_beyond_loopback
    before = log.stat().st_size
    yield
    with open(log) as f:
        f.seek(before)
        blocked = f.read().split()
    if blocked:
        pytest.fail(f"the test tried to reach beyond loopback: {', '.join(blocked)}", pytrace=False)


@pytest.fixture(autouse=True)
def settings_of_the_environment() -> Iterator[None]:
    """A test that runs a command in-process (CliRunner) leaves the process's settings as it found them: a
    command makes its flags the process's settings, which the next test would otherwise inherit."""
    from baton.settings import use_settings

    before = use_settings(None)
    use_settings(before)
    yield
    use_settings(before)


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
