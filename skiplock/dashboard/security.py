"""Who may see the pages, and which POSTs are the operator's own (CSRF).

Credentials are compared in constant time: both sides are hashed to a fixed
length first, so neither the content nor the length of the secret leaks
through the time a refusal takes. The CSRF token lives in the signed session
cookie and must come back in every POST's form; a page of another site can
make the browser send the cookie, but cannot read the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from skiplock.dashboard.settings import DashboardSettings

CSRF_FIELD = "csrf_token"


def same_secret(given: str, expected: str) -> bool:
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


def authenticate(settings: DashboardSettings, authorization: str | None) -> str | None:
    """The name to log for this request, or None if it must be refused.

    Without configured credentials (a loopback bind) everyone local is let in
    as "local". With them: HTTP Basic with the password (the user name is free
    and is what the action log records), or a Bearer token.
    """
    if not settings.needs_credentials:
        return "local"
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and settings.token:
        return "token" if same_secret(value, settings.token) else None
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        for secret in (settings.password, settings.token):
            if secret and same_secret(password, secret):
                return user or "anonymous"
    return None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and same_secret(given or "", expected or "")
