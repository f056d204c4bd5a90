"""The celery runtime's face: its install hint, what it prints about the broker, how it sets Celery up."""

import re
import subprocess
import sys

import pytest


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
