"""E-mail as a side effect done once: `baton.mail.send_email(...)` inside a `@step(side_effect=True)`.

The server comes from BATON_SMTP_URL: `smtp://[user:password@]host[:port]` (plain, or STARTTLS with
`?starttls=1`), `smtps://...` (TLS from the start), with `?from=sender@example.com` as the default sender.
Each message carries the effect's idempotency key as its Message-ID (`<KEY@baton>`) and in an
`X-Baton-Idempotency-Key` header, so that a receiver can drop a copy as well; baton itself never sends one.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from baton.effects import effect
from baton.errors import UserError

__all__ = ["SmtpSettings", "send_email"]


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
        """Parse `smtp://` or `smtps://` URLs; a mistake names the URL without its password."""
        parts = urlsplit(url)
        shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise UserError(f"BATON_SMTP_URL={shown!r}: write smtp://[user:password@]host[:port] (or smtps://)")
        query = parse_qs(parts.query)
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            tls=tls,
            starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender=query.get("from", [None])[0],
        )


def send_email(
    to: str | list[str], subject: str, body: str, *, sender: str | None = None, url: str | None = None
) -> dict[str, Any]:
    """Send one e-mail, once per run and step however often the step is attempted; returns its Message-ID
    and recipients (what a later attempt gets back instead of sending)."""
    from baton.settings import Settings

    smtp_url = url or Settings.from_env().smtp_url
    if not smtp_url:
        raise UserError("no SMTP server: set BATON_SMTP_URL, e.g. smtp://127.0.0.1:1025?from=baton@example.com")
    settings = SmtpSettings.from_url(smtp_url)
    recipients = [to] if isinstance(to, str) else list(to)
    from_ = sender or settings.sender or "baton@localhost"

    def act(key: str) -> dict[str, Any]:
        message = EmailMessage()
        message["From"] = from_
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = f"<{key.replace('/', '.')}@baton>"
        message["X-Baton-Idempotency-Key"] = key
        message.set_content(body)
        client: smtplib.SMTP
        if settings.tls:
            client = smtplib.SMTP_SSL(settings.host, settings.port, context=ssl.create_default_context(), timeout=30)
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=30)
        with client:
            if settings.starttls:
                client.starttls(context=ssl.create_default_context())
            if settings.user:
                client.login(settings.user, settings.password or "")
            client.send_message(message)
        return {"message_id": message["Message-ID"], "to": recipients}

    return effect("email", act)
