"""A broker that is wrong (misspelt, down, refusing the login) is told in one line naming its setting, at once,
and leaves nothing half-made: a run is recorded and queued, or not recorded, or reported as not queued with
its id and the command that queues it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import baton
from baton._loader import load_target
from baton.runtime.celery import _app as celery_app_module
from baton.runtime.celery import celery_app
from tests.integration.commands import baton as run_baton
from tests.integration.commands import show, wait_until_finished
from tests.integration.serving import free_port
from tests.integration.workers import REDIS_URL

APPS = Path(__file__).parent / "apps"
CONTROLLED = f"{APPS / 'controlled.py'}:controlled"
RUN = ["run", CONTROLLED, "--input", '{"value": 1}', "--runtime", "celery"]
# Every command that uses the broker at once; `serve` would otherwise listen on this port.
USERS = {"run": RUN, "worker": ["worker"], "serve": ["serve", "--runtime", "celery", "--port", "1"]}


class OwnRedis:
    """A `redis-server` of the test's own on a free port, without persistence, to stop and start again."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.port = free_port()
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                     "no", "--dir", str(folder), *options]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, userinfo: str = "", db: int = 0) -> str:
        return f"redis://{userinfo}127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()
                return
            except redis.exceptions.AuthenticationError:
                return  # up, with a password
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "the test's Redis did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def refused(env: dict[str, str], args: list[str], code: int) -> str:
    """The one line of stderr of `baton ARGS`, which must exit `code` and print nothing else (Celery's own
    retries ended in a traceback)."""
    result = run_baton(env, *args, check=code)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr


def no_runs(env: dict[str, str]) -> None:
    assert json.loads(run_baton(env, "runs", "--json", check=0).stdout) == []


def test_a_broker_where_nothing_listens_is_one_line_exit_1_and_no_run_is_recorded(env):
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = env | {"BATON_BROKER_URL": url}
    for command, args in USERS.items():
        line = refused(env, args, 1)
        assert f"cannot reach the Celery broker at {url.replace('s3cret', '***')} (BATON_BROKER_URL)" in line, command
        assert "Connection refused" in line and "s3cret" not in line
    no_runs(env)


def test_a_result_backend_where_nothing_listens_is_one_line_naming_it(env, rabbitmq):
    backend = f"redis://127.0.0.1:{free_port()}/0"
    env = env | {"BATON_BROKER_URL": rabbitmq, "BATON_RESULT_BACKEND": backend}
    for args in (RUN, USERS["worker"]):
        line = refused(env, args, 1)
        assert f"cannot reach the Celery result backend at {backend} (BATON_RESULT_BACKEND)" in line
    no_runs(env)


def test_a_broker_url_of_an_unknown_scheme_is_one_line_exit_2(env):
    env = env | {"BATON_BROKER_URL": "reddis://127.0.0.1:6379/0"}
    for args in USERS.values():
        line = refused(env, args, 2)
        assert "BATON_BROKER_URL='reddis://127.0.0.1:6379/0': unknown scheme 'reddis://'; did you mean redis" in line
    # A command that never uses the celery runtime does not care what the broker's setting says.
    local = run_baton(env, "run", CONTROLLED, "--input", '{"value": 1}', check=0)
    assert "Traceback" not in local.stderr and json.loads(run_baton(env, "runs", "--json", check=0).stdout)
    for variable, url in [("BATON_BROKER_URL", "http://127.0.0.1:6379"), ("BATON_RESULT_BACKEND", "reddis://h/0")]:
        line = refused(env | {"BATON_BROKER_URL": "", variable: url}, RUN, 2)
        assert f"{variable}='{url}': unknown scheme" in line and "use one of redis://" in line, line


@pytest.mark.parametrize(
    ("wrong", "says"),
    [(("guest:guest@", "guest:wrong@"), "ACCESS_REFUSED"), (("/baton_test", "/no_such_vhost"), "NOT_ALLOWED")],
)
def test_a_wrong_rabbitmq_login_or_virtual_host_is_one_line_exit_1(env, rabbitmq, wrong, says):
    url = rabbitmq.replace(*wrong)
    assert url != rabbitmq
    env = env | {"BATON_BROKER_URL": url, "BATON_RESULT_BACKEND": REDIS_URL}
    for args in (RUN, USERS["worker"]):
        line = refused(env, args, 1)
        assert "cannot reach the Celery broker at amqp://guest:***@127.0.0.1:5672/" in line and says in line, line
        assert "wrong" not in line.split("(BATON_BROKER_URL)")[0]
    no_runs(env)


def test_a_wrong_redis_password_or_database_is_one_line_exit_1(env, tmp_path):
    server = OwnRedis(tmp_path, "--requirepass", "right")
    server.start()
    try:
        for url, says in [
            (server.url(":wrong@"), "invalid username-password pair"),
            (server.url(), "Authentication required"),
            (server.url(":right@", db=99), "DB index is out of range"),
        ]:
            line = refused(env | {"BATON_BROKER_URL": url}, RUN, 1)
            assert "(BATON_BROKER_URL)" in line and says in line, line
            assert "right" not in line and "wrong" not in line
    finally:
        server.stop()
    no_runs(env)


def test_resuming_a_celery_run_while_the_broker_is_down_is_one_line_and_changes_nothing(env, own_redis):
    env["BATON_BROKER_URL"] = own_redis.url()
    run_id = run_baton(env, *RUN, check=0).stdout.strip()  # queued; no worker runs it
    own_redis.stop()
    line = refused(env, ["resume", run_id], 1)
    assert f"cannot reach the Celery broker at {own_redis.url()} (BATON_BROKER_URL)" in line
    bulk = run_baton(env, "resume", "--all", "--status", "pending", "--yes", check=1)
    assert f"not resumed  {run_id}  controlled: cannot reach the Celery broker" in bulk.stdout, bulk.stdout
    assert "Traceback" not in bulk.stdout + bulk.stderr
    run = show(env, run_id)
    assert (run["status"], [s["status"] for s in run["steps"]]) == ("pending", ["pending"] * 3)


def test_a_broker_lost_after_the_run_was_recorded_reports_it_not_queued_and_resume_queues_it(
    env, own_redis, workers, monkeypatch
):
    env["BATON_BROKER_URL"] = own_redis.url()
    for key in ("BATON_BROKER_URL", "BATON_TEST_DIR", "BATON_DATABASE_URL"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setattr(celery_app_module, "TRUSTED_FOR", 3600.0)  # however slow this machine is today
    celery_app.cache_clear()
    store = baton.RunStore(env["BATON_DATABASE_URL"])
    try:
        controlled = load_target(CONTROLLED)
        controlled.submit({"value": 1}, store=store, runtime="celery")  # the broker is looked at, and trusted
        own_redis.stop()  # lost between that look and the next send
        with pytest.raises(baton.RunNotQueued) as not_queued:
            controlled.submit({"value": 2}, store=store, runtime="celery")
        run_id = not_queued.value.run_id
        assert str(not_queued.value) == (
            f"run {run_id} is recorded but not queued: cannot reach the Celery broker at {own_redis.url()} "
            f"(BATON_BROKER_URL): Error 111 connecting to 127.0.0.1:{own_redis.port}. Connection refused; "
            f"queue it with: baton resume {run_id}"
        )
        assert store.runs.get(run_id).status is baton.RunStatus.PENDING
        # Looked at afresh now that a send failed: refused before anything is recorded.
        with pytest.raises(baton.BrokerUnavailable) as unavailable:
            controlled.submit({"value": 3}, store=store, runtime="celery")
        assert not isinstance(unavailable.value, baton.RunNotQueued)
        assert len(store.runs.list()) == 2
    finally:
        store.close()
        celery_app.cache_clear()
    own_redis.start()  # empty: the first run's message is gone too (the sweeper would queue it again)
    resumed = run_baton(env, "resume", run_id, check=0)
    assert "resumed on the celery runtime" in resumed.stderr
    assert redis.Redis.from_url(own_redis.url()).llen("baton") == 1  # exactly its message
    workers.start(concurrency=1)
    run = wait_until_finished(env, run_id, timeout=30)
    assert (run["status"], run["output"]) == ("succeeded", {"value": 35})


def test_a_pipeline_run_is_queued_when_its_result_backend_went_down_since_it_was_looked_at(
    env, own_redis, tmp_path, monkeypatch
):
    # A pipeline's steps need no result backend (only a supervisor's fan-out counts there): sending one must not
    # wait on it, as Celery's subscription to every sent task's result did, for 20 s of retries and a traceback.
    # (A submit looks at both first, and refuses a backend that is down: a celery worker cannot fan out then.)
    backend = OwnRedis(tmp_path / "backend")
    (tmp_path / "backend").mkdir()
    backend.start()
    monkeypatch.setenv("BATON_BROKER_URL", own_redis.url())
    monkeypatch.setenv("BATON_RESULT_BACKEND", backend.url())
    monkeypatch.setenv("BATON_TEST_DIR", env["BATON_TEST_DIR"])
    monkeypatch.setattr(celery_app_module, "TRUSTED_FOR", 3600.0)
    celery_app.cache_clear()
    store = baton.RunStore(env["BATON_DATABASE_URL"])
    try:
        controlled = load_target(CONTROLLED)
        controlled.submit({"value": 1}, store=store, runtime="celery")  # both looked at, and trusted
        backend.stop()
        controlled.submit({"value": 2}, store=store, runtime="celery")
        assert redis.Redis.from_url(own_redis.url()).llen("baton") == 2
    finally:
        store.close()
        celery_app.cache_clear()
        backend.stop()


def test_over_http_a_broker_down_is_a_503_and_a_run_recorded_but_not_queued_a_202_naming_it(
    env, own_redis, monkeypatch
):
    from fastapi.testclient import TestClient

    from baton.web.access import Access
    from baton.web.app import create_app

    env["BATON_BROKER_URL"] = own_redis.url()
    for key in ("BATON_BROKER_URL", "BATON_TEST_DIR", "BATON_DATABASE_URL"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setattr(celery_app_module, "TRUSTED_FOR", 3600.0)
    celery_app.cache_clear()
    load_target(CONTROLLED)  # the server's --import
    store = baton.RunStore(env["BATON_DATABASE_URL"])
    token = "broker-mistakes-token-0123456789"
    app = create_app(store, runtime="celery", sweep=False, access=Access.from_setting(token))
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
            assert client.post("/runs/controlled", json={"value": 1}).status_code == 202  # looked at, and trusted
            own_redis.stop()
            # Recorded, then refused by the broker: accepted with its id (the sweeper queues it once the broker
            # answers), so that a client does not send it again and start a second run.
            answer = client.post("/runs/controlled", json={"value": 2})
            assert answer.status_code == 202 and answer.json()["queued"] is False, answer.text
            run_id = answer.json()["id"]
            assert store.runs.get(run_id).status is baton.RunStatus.PENDING
            assert f"run {run_id} is recorded but not queued" in answer.json()["detail"]
            # Looked at again: nothing recorded, and the client may try again later.
            down = client.post("/runs/controlled", json={"value": 3})
            assert down.status_code == 503 and down.headers["Retry-After"] == "5", down.text
            assert "nothing was recorded" in down.json()["detail"]
            for text in (answer.text, down.text):  # where the broker is, is the operator's
                assert str(own_redis.port) not in text and "redis://" not in text
            assert len(store.runs.list()) == 2
    finally:
        store.close()
        celery_app.cache_clear()


def test_a_celery_command_refused_for_its_broker_leaves_no_store_behind(env, tmp_path):
    env = {k: v for k, v in env.items() if k != "BATON_DATABASE_URL"}  # the default: ./.baton/baton.db
    env["BATON_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    folder = tmp_path / "new"
    folder.mkdir()
    for args in (RUN, USERS["worker"]):
        result = run_baton(env, *args, check=1, cwd=folder)
        assert "cannot reach the Celery broker" in result.stderr
        assert list(folder.iterdir()) == [], args
