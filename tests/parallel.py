"""The suite runs in two pytest-xdist worker processes at once (`-n 2` in pyproject.toml). What they would share,
and how they do not:

- PostgreSQL: each test makes a database of its own with a random name (tests/conftest.py), nothing to do.
- Temporary folders and ports: each worker has its own `tmp_path` root; ports are free ones picked at run time.
- Redis: each worker has a database of its own, which its tests empty: BATON_TEST_REDIS_URL's database (7 by
  default) is gw0's, gw1 has the next one, and so on (`redis_url_of_this_worker`).
- RabbitMQ: one test restarts the whole server, which would cut every other RabbitMQ test's connection, so every
  test that uses RabbitMQ runs on the same worker, one after another (the `rabbitmq` group below), in the one
  virtual host `baton_test`.
- The CPU: the embedded model uses both cores, so the tests that run a model (in process or in the llama.cpp
  server) run on one worker (the `model` group), and the other worker meanwhile runs the tests that mostly wait
  on processes, brokers and databases.
- The base install's virtual environment, made once per worker that needs it: its tests are one group.

A group is an `xdist_group` mark; with `--dist loadgroup` all the tests of a group run on one worker.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import pytest

# "gw0", "gw1", ... in an xdist worker; "" when pytest runs without xdist (-n 0, -p no:xdist).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER[2:]) if WORKER.startswith("gw") else 0

MODEL = pytest.mark.xdist_group("model")
BASE_INSTALL = pytest.mark.xdist_group("base-install")
RABBITMQ = pytest.mark.xdist_group("rabbitmq")

# The parameters by which a test runs a variant on RabbitMQ (`broker` indirect, or a runtime's variant).
RABBITMQ_VARIANTS = {"rabbitmq", "celery-rabbitmq"}


def redis_url_of_this_worker(base: str) -> str:
    """`base` (redis://host:port/DB) with DB + this worker's index: gw0 has DB, gw1 DB + 1."""
    parts = urlsplit(base)
    db = int(parts.path.strip("/") or 0) + WORKER_INDEX
    return urlunsplit(parts._replace(path=f"/{db}"))


def uses_rabbitmq(item: pytest.Item) -> bool:
    if "rabbitmq" in getattr(item, "fixturenames", ()):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(isinstance(value, str) and value in RABBITMQ_VARIANTS for value in params.values())


def group(items: list[pytest.Item]) -> None:
    """Put every test that talks to RabbitMQ in the `rabbitmq` group, and every one that takes the llama.cpp
    server in the `model` group (the tests that run the embedded model in process are marked `MODEL` where they
    are written). A test has one group at most: xdist would make a group of its own of two."""
    for item in items:
        mark = RABBITMQ if uses_rabbitmq(item) else MODEL if "llama_server" in item.fixturenames else None
        if mark is None:
            continue
        marked = item.get_closest_marker("xdist_group")
        if marked is None:
            item.add_marker(mark)
        else:
            assert marked.args == mark.args, f"{item.nodeid} would be in two xdist groups: {marked.args}, {mark.args}"


def name_groups_in_ids(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Append "@GROUP" to the id of each grouped test, if xdist's own hook did not.

    An xdist worker tells the scheduler a test's group in the test's id, which it changes in its own
    `pytest_collection_modifyitems`; since pytest 9.2 keeps ids in another attribute, xdist 3.8's change no
    longer takes effect, and the groups are silently ignored (pytest-dev/pytest-xdist#1386). Runs after xdist's
    hook: when a fixed xdist has named the group already, it does nothing."""
    if not getattr(config.option, "loadgroup", False):  # set in an xdist worker with --dist loadgroup only
        return
    for item in items:
        marks = list(item.iter_markers("xdist_group"))
        if not marks:
            continue
        suffix = "@" + "_".join(sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}))
        if item.nodeid.endswith(suffix):
            continue
        if hasattr(item, "_id"):  # pytest >= 9.2: a structured id
            item._id = type(item._id).parse(item.nodeid + suffix)
        else:
            item._nodeid = item.nodeid + suffix
        assert item.nodeid.endswith(suffix), f"cannot name the xdist group of {item.nodeid}"
