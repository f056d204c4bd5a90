"""Inputs past baton's limits (`baton.limits`) are refused in one line by the CLI (exit 2) and with a 4xx by
the API, before any run starts; the API never echoes a large input back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from baton.limits import MAX_DEPTH, MAX_INPUT_BYTES, MAX_INT_DIGITS
from baton.web.access import Access
from baton.web.app import create_app
from tests.integration.commands import baton
from tests.integration.test_api import API_PIPELINE

APPS = Path(__file__).parent / "apps"
BILLING = f"{APPS / 'billing.py'}:billing"
TOKEN = "limits-test-token"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def env(sqlite_url):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    return environment | {"BATON_DATABASE_URL": sqlite_url}


@pytest.fixture
def client(store):
    assert API_PIPELINE.name  # the pattern the API starts runs of, registered by importing it
    app = create_app(store, sweep=False, access=Access.from_setting(TOKEN))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, raise_server_exceptions=False) as c:
        yield c


def refused_in_one_line(env, *args) -> str:
    result = baton(env, "run", BILLING, "--input", *args, check=2)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert json.loads(baton(env, "runs", "--json", check=0).stdout) == []  # nothing started
    return lines[0]


def test_the_cli_refuses_an_input_nested_past_the_limit(env, tmp_path):
    assert f"deeper than {MAX_DEPTH} levels" in refused_in_one_line(env, nested(MAX_DEPTH + 1))
    # Far past it, where Python's own parser would give up with a RecursionError.
    (tmp_path / "deep.json").write_text(nested(100_000))
    assert f"deeper than {MAX_DEPTH} levels" in refused_in_one_line(env, f"@{tmp_path / 'deep.json'}")
    # At the limit, the input is read, and refused by the pipeline's contract instead.
    at_limit = baton(env, "run", BILLING, "--input", nested(MAX_DEPTH), check=2)
    assert "violates contract Invoice" in at_limit.stderr


def test_the_cli_refuses_an_input_that_is_not_utf8(env, tmp_path):
    argument = os.fsdecode(b'{"customer": "\xff", "amounts": []}')
    assert "--input is not UTF-8 (byte 14 is 0xff)" in refused_in_one_line(env, argument)
    (tmp_path / "latin1.json").write_bytes('{"customer": "Zoë", "amounts": []}'.encode("latin-1"))
    assert "is not UTF-8" in refused_in_one_line(env, f"@{tmp_path / 'latin1.json'}")


def test_the_cli_refuses_huge_integers_and_numbers_json_does_not_have(env):
    huge = '{"customer": "Ada", "amounts": [1' + "0" * 5000 + "]}"
    assert f"an integer of 5001 digits; baton accepts at most {MAX_INT_DIGITS}" in refused_in_one_line(env, huge)
    assert "too large for a float" in refused_in_one_line(env, '{"customer": "Ada", "amounts": [1e999]}')
    assert "NaN, which is not JSON" in refused_in_one_line(env, '{"customer": "Ada", "amounts": [NaN]}')


def test_the_cli_reads_at_most_the_limit_of_an_unbounded_file(env):
    line = refused_in_one_line(env, "@/dev/zero")
    assert line == "error: --input @/dev/zero is larger than 10 MiB, baton's limit on an input"
    assert MAX_INPUT_BYTES == 10 * 1024 * 1024


def test_the_cli_still_takes_an_input_within_the_limits_from_stdin(env):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "baton", "run", BILLING, "--input", "@-", "--json"],
        input=b'{"customer": "Zo\xc3\xab", "amounts": [12345678901234567890]}', env=env, capture_output=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == {"body": "Dear Zoë, you owe 12345678901234567168.00."}


@pytest.mark.parametrize("path", ["/runs/api-tickets", "/runs/0123456789abcdef0123456789abcdef/retry", "/events/x"])
def test_the_api_answers_422_to_json_nested_past_the_limit(client, path):
    for depth in (MAX_DEPTH + 1, 100_000):
        answer = client.post(path, content=nested(depth), headers={"content-type": "application/json"})
        if path == "/events/x":  # nobody subscribes: refused before the body is read
            assert answer.status_code == 404
            continue
        assert answer.status_code == 422, answer.text
        assert f"deeper than {MAX_DEPTH} levels" in answer.json()["detail"]


def test_the_api_refuses_bodies_past_the_limits_with_a_4xx(client):
    too_big = b'{"text": "' + b"x" * MAX_INPUT_BYTES + b'"}'
    assert client.post("/runs/api-tickets", content=too_big).status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(11):
            yield b"x" * (1024 * 1024)

    streamed = client.post("/runs/api-tickets", content=chunks())
    assert streamed.status_code == 413 and "larger than 10 MiB" in streamed.json()["detail"]
    huge = client.post("/runs/api-tickets", content=b'{"text": 1' + b"0" * 5000 + b"}")
    assert huge.status_code == 422 and "5001 digits" in huge.json()["detail"]
    latin1 = client.post("/runs/api-tickets", content='{"text": "Zoë"}'.encode("latin-1"))
    assert latin1.status_code == 422 and "not UTF-8" in latin1.json()["detail"]
    assert client.get("/runs").json()["runs"] == []


def test_a_422_does_not_echo_a_large_input(client):
    answer = client.post("/runs/0123456789abcdef0123456789abcdef/retry", json={"from_step": "x" * 100_000})
    assert answer.status_code == 422
    assert len(answer.text) < 1000 and "xxxxxxxxxx" not in answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "from_step"]
    # A small one is still shown, as FastAPI shows it.
    small = client.post("/runs/0123456789abcdef0123456789abcdef/retry", json={"from_step": 3})
    assert small.status_code == 422 and small.json()["detail"][0]["input"] == 3
