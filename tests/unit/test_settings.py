import re
from dataclasses import replace
from pathlib import Path

import pytest

from baton import UserError
from baton.cli._common import cli_settings
from baton.settings import Settings, StoreSettings, current_settings, use_settings

README = Path(__file__).parents[2] / "README.md"


def test_every_variable_lands_in_its_section_with_its_type():
    settings = Settings.from_env(
        {
            "BATON_DATABASE_URL": "sqlite:///x.db",
            "BATON_LEASE_SECONDS": "5",
            "BATON_BROKER_URL": "redis://h:6379/1",
            "BATON_WORKER_CONCURRENCY": "8",
            "BATON_WORKER_POOL": "solo",
            "BATON_CELERY_HOP": "step",
            "BATON_PORT": "9000",
            "BATON_DASHBOARD_TOKEN": "tok",
            "BATON_OPENAI_BASE_URL": "http://127.0.0.1:8080/v1",
            "BATON_OPENAI_TIMEOUT": "7.5",
            "BATON_LOCAL_THREADS": "3",
            "BATON_SMTP_URL": "smtp://127.0.0.1:1025",
            "BATON_RUNTIME": "celery",
        }
    )
    assert settings.store == StoreSettings(database_url="sqlite:///x.db", lease_seconds=5.0)
    assert (settings.worker.broker_url, settings.worker.concurrency, settings.worker.pool) == (
        "redis://h:6379/1",
        8,
        "solo",
    )
    assert settings.worker.celery_hop == "step" and settings.server.port == 9000
    assert settings.server.dashboard_token == "tok" and "tok" not in repr(settings)
    assert settings.providers.openai_base_url == "http://127.0.0.1:8080/v1" and settings.providers.openai_timeout == 7.5
    assert settings.providers.local_threads == 3 and settings.mail.smtp_url == "smtp://127.0.0.1:1025"
    assert settings.runtime == "celery"


def test_an_empty_environment_gives_the_documented_defaults():
    settings = Settings.from_env({"BATON_MODEL": ""})
    assert settings == Settings()
    assert settings.store.resolved_url().endswith("/.baton/baton.db")
    assert (settings.worker.broker_url, settings.worker.visibility_timeout) == ("redis://127.0.0.1:6379/0", 600.0)
    assert (settings.server.host, settings.server.port, settings.providers.model) == ("127.0.0.1", 8000, "local")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BATON_LEASE_SECONDS", "soon", "BATON_LEASE_SECONDS='soon' is not a number"),
        ("BATON_PORT", "80.5", "BATON_PORT='80.5' is not a whole number"),
        ("BATON_VISIBILITY_TIMEOUT", "-1", "BATON_VISIBILITY_TIMEOUT='-1' cannot be negative"),
        ("BATON_MAX_IN_FLIGHT", "0", "BATON_MAX_IN_FLIGHT='0': at least 1"),
        ("BATON_WORKER_CONCURRENCY", "-2", "BATON_WORKER_CONCURRENCY='-2' cannot be negative"),
        ("BATON_CELERY_HOP", "task", "BATON_CELERY_HOP='task': use one of 'run', 'step'"),
        ("BATON_OPENAI_RESPONSE_FORMAT", "json", "BATON_OPENAI_RESPONSE_FORMAT='json'"),
    ],
)
def test_a_bad_value_fails_naming_its_variable(variable, value, says):
    with pytest.raises(UserError, match=re.escape(says)):
        Settings.from_env({variable: value})


def test_a_broker_url_baton_cannot_use_is_no_concern_of_a_process_that_never_uses_celery():
    settings = Settings.from_env({"BATON_BROKER_URL": "reddis://h", "BATON_RESULT_BACKEND": "memory://"})
    assert settings.worker.broker_url == "reddis://h"  # checked when the celery runtime is used


def test_every_variable_is_in_the_readmes_settings_table():
    table = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in Settings().variables() if f"`{name}`" not in table]
    assert not missing


def test_the_current_settings_follow_the_environment_until_some_are_installed(monkeypatch):
    monkeypatch.setenv("BATON_MODEL", "openai:one")
    assert current_settings().providers.model == "openai:one"
    monkeypatch.setenv("BATON_MODEL", "openai:two")
    assert current_settings().providers.model == "openai:two"
    mine = replace(Settings(), runtime="celery")
    assert use_settings(mine) is None
    try:
        assert current_settings() is mine
    finally:
        use_settings(None)
    assert current_settings().providers.model == "openai:two"


def test_the_clis_flags_win_over_the_environment_and_become_the_processs(monkeypatch):
    monkeypatch.setenv("BATON_DATABASE_URL", "sqlite:///env.db")
    monkeypatch.setenv("BATON_BROKER_URL", "redis://env:6379/0")
    try:
        settings = cli_settings(database_url="sqlite:///flag.db", port=9001)
        assert current_settings() is settings
    finally:
        use_settings(None)
    assert settings.store.database_url == "sqlite:///flag.db" and settings.server.port == 9001
    assert settings.worker.broker_url == "redis://env:6379/0"
