"""Who may use `baton serve`: the dashboard token, and the rules it enforces.

With BATON_DASHBOARD_TOKEN set, every page and API call needs it. Without it the server listens on loopback
only (`baton serve` refuses anything else) and lets anyone there read; an action that changes something
(submit, resume, retry, cancel, publish) still needs a token, so the server makes one for its own lifetime
and prints a sign-in address with it once, where it was started (as Jupyter does; the token rides in the
address's #fragment, which browsers do not send, so no access log records it).

Without a token the server answers only to this machine's loopback names (Host: localhost, 127.0.0.1, [::1]),
so a page elsewhere whose name was made to point at 127.0.0.1 cannot read through the visitor's browser.

A program sends `Authorization: Bearer TOKEN`. A browser signs in at /login and then carries a cookie: an
HMAC of the token, never the token itself, HttpOnly and SameSite=Strict, so that another site's page cannot
make the browser act here; a changing request carried by the cookie must also come from this origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

from baton._net import is_loopback

__all__ = ["COOKIE", "Access", "is_loopback"]

COOKIE = "baton_session"

# The methods that only read.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Access:
    """The token a server accepts, and whether it was configured (then reading needs it too)."""

    token: str = field(repr=False)
    configured: bool

    @classmethod
    def from_setting(cls, token: str | None) -> Access:
        """The access of a server given BATON_DASHBOARD_TOKEN's value (None or empty: a token of its own)."""
        if token:
            return cls(token=token, configured=True)
        return cls(token=secrets.token_urlsafe(24), configured=False)

    @property
    def session(self) -> str:
        """The cookie a signed-in browser carries: derived from the token, useless to learn the token from."""
        return hmac.new(self.token.encode(), b"baton-dashboard-session", hashlib.sha256).hexdigest()

    def check_token(self, given: str | None) -> bool:
        """True when `given` is the token (compared in constant time)."""
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def signed_in(self, request: Request) -> bool:
        """True when the browser carries this server's session cookie: then, and only then, it may sign out."""
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())

    def foreign_host(self, request: Request) -> bool:
        """True when a server without a token is asked for another host than this machine's loopback names:
        a page elsewhere whose name was made to point here (DNS rebinding) must not read the runs."""
        if self.configured:
            return False
        host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        return not is_loopback(host)

    def decide(self, request: Request) -> str | None:
        """None when the request may go on; else why not, for the 401 or the sign-in page."""
        method = request.method.upper()
        if not self.configured and method in SAFE_METHODS:
            return None
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            if self.check_token(header[7:].strip()):
                return None
            return "the token given is not the dashboard token"
        if self.signed_in(request):
            if method in SAFE_METHODS or _same_origin(request):
                return None
            return "this request came from another site's page; it was refused"
        if self.configured:
            return "sign in with the dashboard token (BATON_DASHBOARD_TOKEN)"
        return "changing something needs the token `baton serve` printed when it started, or BATON_DASHBOARD_TOKEN"


def _same_origin(request: Request) -> bool:
    """Whether a browser's request says it comes from a page of this server (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True  # not a browser's cross-site request: those carry an Origin on every POST
    parts = urlsplit(source)
    return parts.netloc == request.headers.get("host", "")
