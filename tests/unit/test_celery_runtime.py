"""The celery runtime's face: its install hint and what it prints about the broker."""

import subprocess
import sys


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
    assert 'pip install "baton[celery]"' in out


def test_the_broker_is_shown_without_its_password():
    from baton.runtime.celery import broker_display, celery_app
    from baton.settings import Settings, WorkerSettings

    settings = Settings(worker=WorkerSettings(broker_url="redis://:s3cret@127.0.0.1:6379/3"))
    shown = broker_display(celery_app(settings))
    assert "s3cret" not in shown and "127.0.0.1:6379/3" in shown
