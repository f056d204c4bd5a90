"""A pipeline whose last step sends an e-mail once (a side effect), obeying the switches of `controlled.py`.

`send.crash_once` in BATON_TEST_DIR: the process is killed right after the e-mail went out and before the
step's checkpoint, once.
"""

from pydantic import BaseModel, Field

# Beside this file: found when baton loads it by path, as workers do.
from switches import _control

from baton import Pipeline, Retry, step
from baton.mail import send_email


class Report(BaseModel):
    subject: str = Field(max_length=200)
    body: str = Field(max_length=5000)


class Sent(BaseModel):
    message_id: str
    to: list[str]


@step(retry=Retry(max_attempts=1))
def compose(report: Report) -> Report:
    _control("compose")
    return Report(subject=f"[report] {report.subject}", body=report.body)


@step(side_effect=True, retry=Retry(max_attempts=3, backoff=0.1))
def send(report: Report) -> Sent:
    sent = send_email("team@example.com", report.subject, report.body)
    _control("send")  # a kill here is a worker lost after the send and before the checkpoint
    return Sent(**sent)


mailer = Pipeline("mailer", [compose, send])


@step(side_effect=True, approval=True, retry=Retry(max_attempts=3, backoff=0.1))
def send_approved(report: Report) -> Sent:
    _control("send_approved")
    return Sent(**send_email("team@example.com", report.subject, report.body))


# The same, with a person's approval before the e-mail.
approved_mailer = Pipeline("approved-mailer", [compose, send_approved])
