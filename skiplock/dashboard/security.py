"""Who may see the pages, and which POSTs are the operator's own (CSRF).

Credentials are compared in constant time: both sides are hashed to a fixed
length first, so neither the content nor the length of the secret leaks
through the time a refusal takes. The CSRF token lives in the signed session
cookie and must come back in every POST's form; a page of another site can
make the browser send the cookie, but cannot read the token.

Neither helps against DNS rebinding: a page of evil.example whose name the
attacker then points at 127.0.0.1 is, to the browser, of the same origin as
the dashboard it now reaches, so it reads every page (the token included).
What gives it away is the name it asked for: the `Host` header says
evil.example. So a request is served only when its Host is one of
`allowed_hosts` (the bind address, localhost, the configured names), and a
POST only when its Origin (or Referer) is the Host it was sent to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from skiplock.dashboard.settings import DashboardSettings, is_loopback

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


# Every address, as a bind: the machine answers on each of its own addresses.
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def split_host(value: str) -> tuple[str, str | None] | None:
    """A `Host` header (or an origin's host) as (name, port): the name lower-cased, an
    IPv6 address without its brackets, the port None when not given; None when the
    value is not a host at all."""
    value = value.lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        name, colon, port_text = value.partition(":")
        port = port_text if colon else None
    if not name or (port is not None and not (port.isascii() and port.isdigit())):
        return None
    return name, port


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(settings: DashboardSettings, host: str | None) -> bool:
    """Whether a request that named `host` (its `Host` header) may be served.

    Allowed: the bind address, `localhost`, 127.0.0.1 and ::1 when bound to a
    loopback address, any IP address when bound to all of them (0.0.0.0, ::),
    and the names of `--allowed-host`; with any port, since an SSH tunnel or a
    reverse proxy puts its own port there. Only a name can be rebound to
    another address: an address is the one the browser connected to. A request
    without the header (HTTP/1.0) does not come from a browser, and is served.
    """
    if host is None:
        return True
    parts = split_host(host)
    if parts is None:
        return False
    name = parts[0]
    bind = settings.host.strip("[]").lower()
    if name in ("localhost", bind) or name in settings.allowed_hosts:
        return True
    if is_loopback(bind) and name in ("127.0.0.1", "::1"):
        return True
    return bind in _WILDCARDS and _is_address(name)


def same_origin(host: str | None, origin: str | None, referer: str | None) -> bool:
    """Whether a POST comes from a page of this dashboard: its `Origin` (a browser sends
    one with every POST), or its `Referer` when it has none, names the host the request
    was sent to. The scheme is not compared: behind a TLS proxy the page is https and
    the request reaching us is http. Neither header, or `Origin: null`: refused."""
    source = origin if origin is not None else referer
    if not source or host is None:
        return False
    try:
        parts = urlsplit(source)
    except ValueError:  # an unclosed IPv6 bracket
        return False
    if parts.scheme not in ("http", "https"):
        return False
    own, theirs = split_host(host), split_host(parts.netloc)
    return own is not None and own == theirs


def safe_back(value: str | None) -> str:
    r"""`value` if it is a path on this site, else "/": a form must not turn the dashboard
    into an open redirect. One "/" then not another, no backslash (browsers read it as a
    "/"), and no control character anywhere: browsers drop tabs and newlines from a URL,
    so "/\t/evil.example" is followed as "//evil.example", another host's."""
    if (value and value.startswith("/") and value[1:2] != "/" and "\\" not in value
            and value.isprintable()):
        return value
    return "/"


def for_log(value: str, limit: int = 300) -> str:
    """Text from a request as a log line quotes it: on one line, control characters,
    newlines and bidi controls escaped as Python writes them (\\n, \\x1b, \\u202e), at
    most `limit` characters; a forged log line or terminal escape stays visible text."""
    shown = repr(value)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
