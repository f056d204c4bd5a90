"""A URL is shown without its secrets: the password of its user part and those of its query string."""

import pytest

from baton._urls import mask_url
from baton.settings import Settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@db.internal:5432/runs", "postgresql://u:***@db.internal:5432/runs"),
        ("postgresql://u@h/db?password=secret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://u@h/db?sslmode=require&sslpassword=k", "postgresql://u@h/db?sslmode=require&sslpassword=***"),
        ("redis://h:6379/0?password=x", "redis://h:6379/0?password=***"),
        ("redis://:pw@h:6379/0?Password=x&db=2", "redis://:***@h:6379/0?Password=***&db=2"),
        # An unencoded '@' or '/' in the password: masked whole, not cut where a strict parser would cut.
        ("postgresql://u:p@ss/w@h/db", "postgresql://u:***@h/db"),
        ("amqp://u:p@a//;amqp://u:q@b//?token=t", "amqp://u:***@a//;amqp://u:***@b//?token=***"),
        ("sqlite:////tmp/runs@2026/baton.db", "sqlite:////tmp/runs@2026/baton.db"),
        ("sqlite:///C:/data@x/baton.db", "sqlite:///C:/data@x/baton.db"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        # No password, nothing masked: a ':***' would say there was one (kombu shows 'redis://:**@' here).
        ("redis://user@host", "redis://user@host"),
        ("redis://:@host:6379/0", "redis://:@host:6379/0"),
        ("redis://:secret@host", "redis://:***@host"),
        ("amqp://guest:guest@host//", "amqp://guest:***@host//"),
        ("not a url", "not a url"),
        # A mistyped URL (no scheme, or a scheme without its '://') may still carry a password before its '@'.
        ("guest:s3cret@127.0.0.1:6379/0", "***@127.0.0.1:6379/0"),
        ("redis//:s3cret@h/0", "***@h/0"),
        ("redis:/:s3cret@h/0", "***@h/0"),
    ],
)
def test_a_url_is_shown_without_its_secrets(url, shown):
    assert mask_url(url) == shown


def test_the_broker_is_shown_without_a_password_in_its_query():
    from baton.runtime.celery import broker_display, celery_app
    from baton.settings import WorkerSettings

    settings = Settings(worker=WorkerSettings(broker_url="redis://127.0.0.1:6379/3?password=s3cret"))
    assert broker_display(celery_app(settings)) == "redis://127.0.0.1:6379/3?password=***"


def test_the_settings_show_their_urls_without_secrets():
    settings = Settings.from_env(
        {
            "BATON_DATABASE_URL": "postgresql://u:pw1@h/db?password=pw2",
            "BATON_BROKER_URL": "redis://h:6379/0?password=pw3",
            "BATON_RESULT_BACKEND": "redis://:pw4@h:6379/1",
            "BATON_DASHBOARD_TOKEN": "pw5",
            "BATON_SMTP_URL": "smtps://u:pw6@mail",
        }
    )
    shown = repr(settings)
    assert all(f"pw{i}" not in shown for i in range(1, 7)), shown
    assert "database_url='postgresql://u:***@h/db?password=***'" in shown
    assert "broker_url='redis://h:6379/0?password=***'" in shown
    assert settings.store.database_url == "postgresql://u:pw1@h/db?password=pw2"  # only the showing is masked
