"""The celery runtime's face: its install hint, what it prints about the broker, how it sets Celery up."""

import re
import subprocess
import sys

import pytest

from baton import UserError
from baton.cli._common import cli_settings
from baton.settings import Settings, use_settings


def test_without_celery_installed_the_runtime_says_what_to_install():
    code = (
        "import sys; sys.modules['celery'] = None\n"
        "import baton\n"
        "try:\n"
        "    baton.Pipeline.submit\n"
        "    from baton.runtime import get_runtime; get_runtime('celery')\n"
        "except baton.UserError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "baton-llm[celery]"' in out


def test_the_broker_is_shown_without_its_password():
    from baton.runtime.celery import broker_display, celery_app
    from baton.settings import Settings, WorkerSettings

    settings = Settings(worker=WorkerSettings(broker_url="redis://:s3cret@127.0.0.1:6379/3"))
    shown = broker_display(celery_app(settings))
    assert "s3cret" not in shown and "127.0.0.1:6379/3" in shown


def test_a_rabbitmq_broker_is_shown_without_its_password():
    from baton.runtime.celery import broker_display, celery_app
    from baton.settings import Settings, WorkerSettings

    worker = WorkerSettings(broker_url="amqp://baton:s3cret@mq.internal:5672/prod", result_backend="redis://r:6379/0")
    shown = broker_display(celery_app(Settings(worker=worker)))
    assert "s3cret" not in shown and shown.startswith("amqp://baton:") and "mq.internal:5672/prod" in shown


@pytest.mark.parametrize(
    ("broker", "backend", "needle"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "", "BATON_RESULT_BACKEND must be set when the broker is not Redis"),
        ("amqp://guest:guest@127.0.0.1:5672//", "rpc://", "BATON_RESULT_BACKEND=rpc://... cannot count"),
        ("redis://127.0.0.1:6379/0", "rpc://", "BATON_RESULT_BACKEND=rpc://... cannot count"),
    ],
)
def test_a_result_backend_that_cannot_count_a_fan_out_is_refused_naming_the_setting(broker, backend, needle):
    from baton import UserError
    from baton.runtime.celery import celery_app
    from baton.settings import Settings, WorkerSettings

    with pytest.raises(UserError, match=re.escape(needle)) as refused:
        celery_app(Settings(worker=WorkerSettings(broker_url=broker, result_backend=backend)))
    assert "guest" not in str(refused.value)


def test_on_rabbitmq_queues_are_durable_messages_persistent_and_sends_confirmed():
    from baton.runtime.celery import QUEUE, celery_app
    from baton.settings import Settings, WorkerSettings

    worker = WorkerSettings(broker_url="amqp://guest:guest@127.0.0.1:5672//", result_backend="redis://r:6379/2")
    app = celery_app(Settings(worker=worker))
    assert app.conf.result_backend == "redis://r:6379/2"
    assert app.amqp.queues[QUEUE].durable and app.conf.task_default_delivery_mode in (2, "persistent")
    # Redis's redelivery timers mean nothing to RabbitMQ, which gives a message back when its consumer goes.
    assert app.conf.broker_transport_options == {"confirm_publish": True}


def test_on_redis_the_broker_counts_the_fan_outs_and_gives_lost_messages_back_after_the_timeout():
    from baton.runtime.celery import celery_app
    from baton.settings import Settings, WorkerSettings

    worker = WorkerSettings(broker_url="redis://127.0.0.1:6379/4", visibility_timeout=20.0)
    app = celery_app(Settings(worker=worker))
    assert app.conf.result_backend == "redis://127.0.0.1:6379/4"
    assert app.conf.broker_transport_options["visibility_timeout"] == 20.0
    assert app.conf.broker_transport_options["unacked_restore_interval"] == 5.0


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BATON_BROKER_URL", "reddis://:pw@h:6379/0", "BATON_BROKER_URL='reddis://:***@h:6379/0': unknown scheme "
         "'reddis://'; did you mean redis://? use one of redis://, rediss://, redis+socket://, sentinel:// (Redis); "
         "amqp://, amqps://, pyamqp:// (RabbitMQ)"),
        ("BATON_BROKER_URL", "http://h:6379", "BATON_BROKER_URL='http://h:6379': unknown scheme 'http://'; use one"),
        ("BATON_BROKER_URL", "127.0.0.1:6379", "BATON_BROKER_URL='127.0.0.1:6379': not a URL; use one of redis://"),
        ("BATON_BROKER_URL", "redis://a:6379;redi://b:6379", "unknown scheme 'redi://'"),
        ("BATON_RESULT_BACKEND", "db+sqlite:///r.db", "BATON_RESULT_BACKEND='db+sqlite:///r.db': unknown scheme"),
        ("BATON_BROKER_URL", "guest:s3cret@h:6379/0", "BATON_BROKER_URL='***@h:6379/0': not a URL"),
    ],
)  # fmt: skip
def test_a_broker_url_baton_cannot_use_fails_naming_its_variable_and_the_schemes_to_use(variable, value, says):
    from baton.runtime.celery import celery_app

    with pytest.raises(UserError, match=re.escape(says)) as refused:
        celery_app(Settings.from_env({variable: value}))
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize("url", ["rediss://h:6380/0", "amqp://guest:guest@h:5672//", "sentinel://h:26379;sentinel://i"])
def test_every_broker_baton_runs_on_is_accepted(url):
    from baton.runtime.celery import celery_app

    app = celery_app(Settings.from_env({"BATON_BROKER_URL": url, "BATON_RESULT_BACKEND": "redis://h"}))
    assert app.conf.broker_url == url


def test_a_broker_given_as_a_flag_is_checked_as_well(monkeypatch):
    monkeypatch.delenv("BATON_BROKER_URL", raising=False)
    try:
        from baton.runtime.celery import celery_app

        with pytest.raises(UserError, match=re.escape("BATON_BROKER_URL='reddis://h': unknown scheme")):
            celery_app(cli_settings(broker_url="reddis://h"))
    finally:
        use_settings(None)
