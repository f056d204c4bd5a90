"""Showing a URL (a store's, a broker's, a server's) without the secrets it may carry."""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_url"]

MASK = "***"

# Query parameters that carry a secret: libpq's password and sslpassword, Redis's password, tokens and keys.
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|api[_-]?key|credential", re.IGNORECASE)
# Several URLs in one setting (a Celery failover list: "redis://a;redis://b").
_NEXT_URL = re.compile(r";(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def mask_url(url: str) -> str:
    """`url` with the password of its user part and the secrets of its query string replaced by ***.

    It reads the URL as written, without parsing it strictly: a password with an unencoded '@' or '/' is
    masked whole. Text that is not a URL comes back as it is, but for what stands before an '@' in it (a
    mistyped `user:password@host` may still hold the password).
    """
    return ";".join(_mask_one(part) for part in _NEXT_URL.split(url))


def _mask_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        _user, at, place = url.rpartition("@")
        return f"{MASK}@{place}" if at else url
    before_query, q, query = rest.partition("?")
    # The user part ends at the last '@' before the query: a password may hold an unencoded '@' or '/'.
    user, at, place = before_query.rpartition("@")
    if at:
        name, colon, password = user.partition(":")
        # A path with a ':' in it (sqlite:///C:/...) has no password; an empty one has nothing to hide.
        if colon and password and "/" not in name:
            user = f"{name}:{MASK}"
    masked = f"{scheme}://{user}{at}{place}"
    if q:
        masked += "?" + _mask_query(query)
    return masked


def _mask_query(query: str) -> str:
    query, hash_, fragment = query.partition("#")
    parts = []
    for item in re.split(r"([&;])", query):
        key, eq, _value = item.partition("=")
        parts.append(f"{key}={MASK}" if eq and _SECRET_KEY.search(key) else item)
    return "".join(parts) + hash_ + fragment
