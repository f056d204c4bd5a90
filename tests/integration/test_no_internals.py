"""No answer names the store's URL, user, host or database, and a password in a URL's query is masked like
one in its user part wherever baton shows the URL."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from baton import RunError, RunStore
from baton.web.access import Access
from baton.web.app import create_app
from tests.integration.commands import baton
from tests.integration.serving import Served

TOKEN = "internals-test-token"
UNKNOWN = "0123456789abcdef0123456789abcdef"


def internals(url: str) -> list[str]:
    """What of a store's URL no client may read: the URL, its user, host, port and database."""
    parts = make_url(url)
    found = [url, parts.database or ""]
    if parts.drivername.startswith("postgresql"):
        found += [f"{parts.username}@", str(parts.host), str(parts.port or 5432)]
    return [part for part in found if part]


@pytest.fixture
def client(any_store):
    app = create_app(any_store, sweep=False, access=Access.from_setting(TOKEN))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, raise_server_exceptions=False) as c:
        yield c


def test_answers_about_unknown_runs_and_events_name_nothing_of_the_store(client, any_store):
    asked = [
        client.get(f"/runs/{UNKNOWN}"),
        client.get(f"/runs/{UNKNOWN[:8]}"),
        client.post(f"/runs/{UNKNOWN}/resume"),
        client.post(f"/runs/{UNKNOWN}/retry", json={"from_step": "a"}),
        client.post(f"/runs/{UNKNOWN}/cancel"),
        client.post(f"/runs/{UNKNOWN}/approve"),
        client.post(f"/runs/{UNKNOWN}/reject"),
        client.get(f"/events/{UNKNOWN}"),
        client.get(f"/ui/runs/{UNKNOWN}"),
    ]
    for answer in asked:
        assert answer.status_code == 404, answer.text
        for secret in internals(any_store.url):
            assert secret not in answer.text, (answer.request.url, secret, answer.text)


def test_a_server_error_is_told_by_its_kind_only(client, any_store, monkeypatch):
    def broken(*args, **kwargs):
        raise RunError(f"the store at {any_store.url} said no")  # a failure that quotes the URL

    monkeypatch.setattr(any_store.runs, "reap", broken)
    monkeypatch.setattr(any_store.runs, "get", broken)
    for answer in (client.get(f"/runs/{UNKNOWN}"), client.get(f"/ui/runs/{UNKNOWN}")):
        assert answer.status_code >= 500
        assert "RunError" in answer.text and "its log says why" in answer.text
        for secret in internals(any_store.url):
            assert secret not in answer.text, (secret, answer.text)


def test_the_cli_names_nothing_of_the_store_for_an_unknown_run(database_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {"BATON_DATABASE_URL": database_url}
    for args in (["show", UNKNOWN], ["resume", UNKNOWN], ["cancel", UNKNOWN[:10]], ["events", "replay", UNKNOWN]):
        result = baton(env, *args, check=2)
        assert "no run with id" in result.stderr or "no event with id" in result.stderr
        for secret in internals(database_url):
            assert secret not in result.stderr + result.stdout, (args, secret)


def test_a_password_in_the_query_is_masked_where_baton_shows_the_url(postgres_url, tmp_path):
    url = f"{postgres_url}?password=s3cret-in-query"  # trusted locally: the password is not checked
    store = RunStore(url)
    try:
        assert store.describe() == f"{postgres_url}?password=***"
    finally:
        store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")} | {"BATON_DATABASE_URL": url}
    served = Served(env, tmp_path / "serve.log")
    printed = served.stop()
    assert f"store {postgres_url}?password=***" in printed
    assert "s3cret-in-query" not in printed


def test_a_nul_in_an_id_or_a_filter_is_refused_not_a_server_error(client):
    asked = [
        client.get("/runs/abcdef%00"),
        client.get("/events/ab%00c"),
        client.get("/runs", params={"pipeline": "a\x00b"}),
        client.get("/runs", params={"failed_step": "a\x00b"}),
        client.post("/runs/abcdef%00/resume"),
        client.post("/runs/abcdef%00/cancel"),
        client.get("/ui/runs", params={"pipeline": "a\x00b"}),
    ]
    for answer in asked:
        assert answer.status_code == 422, (answer.request.url, answer.status_code, answer.text)
        assert "NUL" in answer.text


def test_no_answer_echoes_a_huge_value_back(client):
    huge = "x" * 5000
    asked = [
        client.get("/runs", params={"status": huge}),
        client.get("/ui/runs", params={"status": huge}),
        client.get("/ui/runs", params={"since": huge}),
        client.get(f"/runs/{huge}"),
        client.get(f"/events/{huge}"),
        client.get(f"/ui/runs/{huge}"),
        client.post(f"/runs/{huge}/cancel"),
    ]
    for answer in asked:
        assert answer.status_code in (404, 422), (answer.request.url, answer.status_code)
        assert huge[:300] not in answer.text, (answer.request.url, len(answer.text))
        assert len(answer.text) < 4000 or answer.headers["content-type"].startswith("text/html")
