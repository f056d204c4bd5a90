"""Side effects done once: an e-mail to a real SMTP server (aiosmtpd on loopback) survives a process killed
right after the send and before the checkpoint, on both runtimes, without a second message."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.integration.commands import baton, control, counts, wait_until_finished
from tests.integration.serving import free_port

MAILER = f"{Path(__file__).parent / 'apps' / 'mailer.py'}:mailer"
REPORT = json.dumps({"subject": "ACME, Q3", "body": "Revenue is up; two risks need a decision."})


class Inbox:
    """A real SMTP server on loopback that keeps every message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[bytes] = []
        self.lock = threading.Lock()
        inbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with inbox.lock:
                    inbox.messages.append(envelope.content)
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?from=reports@example.com"

    def ids(self) -> list[str]:
        with self.lock:
            return [
                line.split(b":", 1)[1].strip().decode()
                for m in self.messages
                for line in m.splitlines()
                if line.lower().startswith(b"message-id:")
            ]


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.controller.stop()


@pytest.mark.parametrize(
    ("runtime", "broker"),
    [("local", "redis"), ("celery", "redis"), ("celery-step", "redis"), ("celery", "rabbitmq")],
    indirect=["broker"],
)
def test_an_email_sent_just_before_the_process_died_is_not_sent_again(env, workers, inbox, runtime):
    env["BATON_SMTP_URL"] = inbox.url
    (control(env) / "send.crash_once").touch()
    if runtime == "local":
        killed = subprocess.run(
            [sys.executable, "-m", "baton", "run", MAILER, "--input", REPORT, "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert killed.returncode == -9  # SIGKILL, right after the send
        run_id = json.loads(baton(env, "runs", "--json", "--limit", "1").stdout)[0]["id"]
        assert wait_until_finished(env, run_id)["status"] == "interrupted"
        assert len(inbox.ids()) == 1
        baton(env, "resume", run_id, "--json", check=0)
    else:
        env["BATON_CELERY_HOP"] = "step" if runtime == "celery-step" else "run"
        workers.start()  # a prefork child dies; the broker gives the message again (acks_late)
        run_id = baton(env, "run", MAILER, "--input", REPORT, "--runtime", "celery", check=0).stdout.strip()
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded", run
    assert counts(env) == {"compose": 1, "send": 2}  # the step ran twice ...
    assert inbox.ids() == [f"<{run_id}.send.email@baton>"]  # ... the e-mail went once, keyed by run and step
    assert run["output"]["message_id"] == inbox.ids()[0]
    effects = json.loads(baton(env, "effects", "--run", run_id, "--json").stdout)
    assert [(e["key"], e["status"]) for e in effects] == [(f"{run_id}/send/email", "done")]


def test_an_effect_whose_outcome_is_unknown_is_never_repeated_until_a_person_says(env, inbox):
    env["BATON_SMTP_URL"] = inbox.url
    (control(env) / "compose.fail").write_text("not yet")
    first = json.loads(baton(env, "run", MAILER, "--input", REPORT, "--json").stdout)
    run_id = first["id"]
    (control(env) / "compose.fail").unlink()
    # What a process killed between the server's "250" and the ledger's commit leaves behind.
    from baton.store import RunStore, utcnow

    store = RunStore(env["BATON_DATABASE_URL"])
    assert store.effects.begin(f"{run_id}/send/email", run_id, 1, "email", utcnow()) is None
    store.close()
    stuck = json.loads(baton(env, "resume", run_id, "--json").stdout)
    assert stuck["status"] == "failed" and stuck["steps"][1]["error"]["type"] == "EffectUncertain"
    assert "baton effects mark" in stuck["steps"][1]["error"]["message"]
    assert inbox.ids() == []
    baton(env, "effects", "mark", f"{run_id}/send/email", "--not-done", check=0)
    done = json.loads(baton(env, "resume", run_id, "--json").stdout)
    assert done["status"] == "succeeded" and len(inbox.ids()) == 1


def test_an_uncertain_email_is_settled_with_what_it_returned_and_the_resumed_step_gets_it(
    env, inbox, database_url, tmp_path
):
    env["BATON_SMTP_URL"] = inbox.url
    env["BATON_DATABASE_URL"] = database_url  # on SQLite and on PostgreSQL
    (control(env) / "compose.fail").write_text("not yet")
    run_id = json.loads(baton(env, "run", MAILER, "--input", REPORT, "--json").stdout)["id"]
    (control(env) / "compose.fail").unlink()
    from baton.store import RunStore, utcnow

    key = f"{run_id}/send/email"
    store = RunStore(database_url)
    assert store.effects.begin(key, run_id, 1, "email", utcnow()) is None  # a process killed after the "250"
    store.close()
    stuck = json.loads(baton(env, "resume", run_id, "--json").stdout)
    message = stuck["steps"][1]["error"]["message"]
    assert f"baton effects mark {key} --done --result JSON" in message and "EmailSent" in message

    def ledger() -> dict:
        return json.loads(baton(env, "effects", "--run", run_id, "--json", check=0).stdout)[0]

    alone = baton(env, "effects", "mark", key, "--done")
    assert alone.returncode == 2 and "--result" in alone.stderr and "message_id, to" in alone.stderr
    wrong = baton(env, "effects", "mark", key, "--done", "--result", '{"message_id": "<m@example.com>"}')
    assert wrong.returncode == 2 and "field 'to': missing" in wrong.stderr, wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    garbled = baton(env, "effects", "mark", key, "--done", "--result", "{message_id")
    assert garbled.returncode == 2 and "--result" in garbled.stderr and "not valid JSON" in garbled.stderr
    assert (ledger()["status"], ledger()["result"]) == ("started", None)  # nothing was recorded

    sent = {"message_id": "<checked-by-hand@example.com>", "to": ["team@example.com"]}
    (tmp_path / "sent.json").write_text(json.dumps(sent))
    baton(env, "effects", "mark", key, "--done", "--result", f"@{tmp_path / 'sent.json'}", check=0)
    assert (ledger()["status"], ledger()["result"]) == ("done", sent)
    done = json.loads(baton(env, "resume", run_id, "--json").stdout)
    assert done["status"] == "succeeded", done
    assert done["output"] == sent and inbox.ids() == []  # the step got what the person said; nothing sent again


APPROVED_MAILER = f"{Path(__file__).parent / 'apps' / 'mailer.py'}:approved_mailer"


@pytest.mark.parametrize("runtime", ["local", "celery"])
def test_the_email_waits_for_a_persons_approval_and_a_rejection_stops_it(env, workers, inbox, runtime):
    env["BATON_SMTP_URL"] = inbox.url
    if runtime == "celery":
        workers.start()

    def start() -> str:
        if runtime == "local":
            waiting = baton(env, "run", APPROVED_MAILER, "--input", REPORT, "--json", check=0)  # exit 0: not a failure
            return json.loads(waiting.stdout)["id"]
        run_id = baton(env, "run", APPROVED_MAILER, "--input", REPORT, "--runtime", "celery", check=0).stdout.strip()
        wait_until_finished(env, run_id)
        return run_id

    run_id = start()
    run = json.loads(baton(env, "show", run_id, "--json").stdout)
    assert run["status"] == "awaiting_approval", run
    assert [s["status"] for s in run["steps"]] == ["succeeded", "pending"]
    listed = json.loads(baton(env, "runs", "--status", "awaiting_approval", "--json").stdout)
    assert [r["id"] for r in listed] == [run_id]
    assert inbox.ids() == [] and "send_approved" not in counts(env)

    baton(env, "approve", run_id, "--json", check=0)
    run = wait_until_finished(env, run_id)
    assert run["status"] == "succeeded", run
    assert inbox.ids() == [f"<{run_id}.send_approved.email@baton>"]

    other = start()
    rejected = json.loads(baton(env, "reject", other, "--reason", "the Q3 numbers are wrong", "--json").stdout)
    assert rejected["status"] == "cancelled"
    history = rejected["steps"][1]["attempt_errors"]
    assert [e["error"]["type"] for e in history] == ["Rejected"] and "Q3 numbers" in history[0]["error"]["message"]
    assert len(inbox.ids()) == 1 and counts(env)["send_approved"] == 1
    refused = baton(env, "approve", other)
    assert refused.returncode == 2 and "not awaiting approval" in refused.stderr


def test_a_person_who_retries_from_the_email_step_gets_a_new_email_with_a_new_key(env, inbox):
    env["BATON_SMTP_URL"] = inbox.url
    run = json.loads(baton(env, "run", MAILER, "--input", REPORT, "--json").stdout)
    assert run["status"] == "succeeded" and inbox.ids() == [f"<{run['id']}.send.email@baton>"]
    again = json.loads(baton(env, "resume", run["id"], "--from", "compose", "--yes", "--json").stdout)
    assert again["status"] == "succeeded"
    # Asked for again, the e-mail is a new effect (generation 2): sent once more, under its own key.
    assert inbox.ids() == [f"<{run['id']}.send.email@baton>", f"<{run['id']}.send.email.2@baton>"]
    keys = {e["key"] for e in json.loads(baton(env, "effects", "--run", run["id"], "--json").stdout)}
    assert keys == {f"{run['id']}/send/email", f"{run['id']}/send/email/2"}


def test_a_retry_whose_steps_did_no_side_effect_yet_asks_nothing(env, inbox):
    env["BATON_SMTP_URL"] = inbox.url
    (control(env) / "compose.fail").touch()
    run = json.loads(baton(env, "run", MAILER, "--input", REPORT, "--json", check=1).stdout)
    assert run["steps"][0]["status"] == "failed" and inbox.ids() == []
    (control(env) / "compose.fail").unlink()
    retried = baton(env, "resume", run["id"], "--from", "compose", "--json")  # no terminal, no --yes
    assert retried.returncode == 0 and "--yes" not in retried.stderr, retried.stderr
    assert json.loads(retried.stdout)["status"] == "succeeded" and len(inbox.ids()) == 1


def test_a_run_awaiting_approval_can_be_cancelled_and_is_not_resumed(env, inbox):
    env["BATON_SMTP_URL"] = inbox.url
    run_id = json.loads(baton(env, "run", APPROVED_MAILER, "--input", REPORT, "--json").stdout)["id"]
    refused = baton(env, "resume", run_id)
    assert refused.returncode == 2 and "awaiting approval" in refused.stderr
    assert json.loads(baton(env, "cancel", run_id, "--json").stdout)["status"] == "cancelled"
    assert inbox.ids() == []
