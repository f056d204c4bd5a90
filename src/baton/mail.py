"""E-mail as a side effect done once: `baton.mail.send_email(...)` inside a `@step(side_effect=True)`.

The server comes from BATON_SMTP_URL: `smtp://[user:password@]host[:port]` (plain, or STARTTLS with
`?starttls=1`), `smtps://...` (TLS from the start), with `?from=sender@example.com` as the default sender.
Each message carries the effect's idempotency key as its Message-ID (`<KEY@baton>`) and in an
`X-Baton-Idempotency-Key` header, so that a receiver can drop a copy as well; baton itself never sends one.
An e-mail whose fate is unknown is settled with what it would have returned:
`baton effects mark KEY --done --result '{"message_id": "<KEY@baton>", "to": ["..."]}'`.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

# pydantic reads a TypedDict from typing_extensions on Python 3.11 (typing's lacks what it needs there).
from typing_extensions import TypedDict

from baton._net import is_loopback
from baton.effects import EffectNotDone, effect
from baton.errors import UserError

__all__ = ["EmailSent", "SmtpSettings", "send_email"]


class EmailSent(TypedDict):
    """What `send_email` returns: the message's Message-ID and its recipients."""

    message_id: str
    to: list[str]


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send: parsed from BATON_SMTP_URL."""

    host: str
    port: int
    tls: bool
    starttls: bool
    user: str | None
    password: str | None
    sender: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        """Parse `smtp://` or `smtps://` URLs; a mistake names the URL without its credentials."""
        parts = urlsplit(url)
        try:
            host, port = parts.hostname, parts.port
            user, password = parts.username, parts.password
        except ValueError:
            host = None  # an unencoded '/', '#' or '@' in the password: the URL cannot be read
        if parts.scheme not in ("smtp", "smtps") or not host or "/" in (parts.path or "/")[1:]:
            # Nothing of the URL is echoed: where it cannot be read, a password may be anywhere in it.
            raise UserError(
                "BATON_SMTP_URL cannot be read: write smtp://[user:password@]host[:port] (or smtps://), with the "
                "password percent-encoded"
            )
        shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
        query = parse_qs(parts.query)
        tls = parts.scheme == "smtps"
        settings = cls(
            host=host,
            port=port or (465 if tls else 25),
            tls=tls,
            starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
            user=unquote(user) if user else None,
            password=unquote(password) if password else None,
            sender=query.get("from", [None])[0],
        )
        if settings.user and not (settings.tls or settings.starttls or is_loopback(settings.host)):
            raise UserError(
                f"BATON_SMTP_URL ({shown}) would send a password in clear text: use smtps://, or add ?starttls=1"
            )
        return settings


def send_email(
    to: str | list[str],
    subject: str,
    body: str,
    *,
    sender: str | None = None,
    url: str | None = None,
    effect_name: str = "email",
) -> EmailSent:
    """Send one e-mail, once per run and step however often the step is attempted; returns its Message-ID
    and recipients (what a later attempt gets back instead of sending). A step sending more than one gives
    each its own `effect_name`."""
    from baton.settings import current_settings

    smtp_url = url or current_settings().mail.smtp_url
    if not smtp_url:
        raise UserError("no SMTP server: set BATON_SMTP_URL, e.g. smtp://127.0.0.1:1025?from=baton@example.com")
    settings = SmtpSettings.from_url(smtp_url)
    recipients = [to] if isinstance(to, str) else list(to)
    from_ = sender or settings.sender or "baton@localhost"

    def act(key: str) -> EmailSent:
        message = EmailMessage()
        message["From"] = from_
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = f"<{key.replace('/', '.')}@baton>"
        message["X-Baton-Idempotency-Key"] = key
        message.set_content(body)
        try:
            client = _connect(settings)
        except (OSError, smtplib.SMTPException) as exc:  # nothing was sent: a retry may send
            raise EffectNotDone(f"could not reach the SMTP server {settings.host}:{settings.port}: {exc}") from None
        try:
            client.send_message(message)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            # The server refused the message outright: it was not accepted, so it was not sent.
            raise EffectNotDone(f"the SMTP server refused the message: {exc}") from None
        finally:
            # Accepted or not, what the server says to QUIT changes nothing about the message.
            with contextlib.suppress(Exception):
                client.quit()
            with contextlib.suppress(Exception):
                client.close()
        return {"message_id": message["Message-ID"], "to": recipients}

    return effect(effect_name, act, returns=EmailSent)


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    """An SMTP session, greeted, encrypted if asked and logged in: everything before a message is sent."""
    client: smtplib.SMTP
    if settings.tls:
        client = smtplib.SMTP_SSL(settings.host, settings.port, context=ssl.create_default_context(), timeout=30)
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=30)
    try:
        if settings.starttls:
            client.starttls(context=ssl.create_default_context())
        if settings.user:
            client.login(settings.user, settings.password or "")
    except BaseException:
        client.close()
        raise
    return client
