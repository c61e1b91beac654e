"""Which database to talk to, and how to print its URL without the password.

No form of a database URL, valid or not, may print its password (see
docs/security.md). `redact` masks it by reading the text itself, never trusting
a parser with a URL that may be malformed: everything between `://` and the
last `@` is the user and the password, and every query parameter whose name
holds "pass" (`password`, `sslpassword`, percent-encoded or not) is masked.
`scrub` removes a URL's secrets from any other text (a driver's error message,
a log line). `normalize` refuses, with one line, URLs that the driver would
misread in a way that puts a piece of the password in its own error (an
unescaped `@` in the password) or that would raise (a port that is not a number).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, unquote_plus

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from skiplock.queue_core.config import Settings, load_settings
from skiplock.queue_core.errors import ConfigurationError

MASK = "***"
_SECRET_NAME = re.compile(r"pass", re.IGNORECASE)
# libpq's key=value form: password='it''s' or password=word
_KEYWORD_SECRET = re.compile(r"(\w*pass\w*)(\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)
_PLAIN_USER = re.compile(r"[\w.%+-]*")
# What splits a password into the pieces a mangled copy may still show: URL
# delimiters, percent escapes, and what JSON or a driver escapes (\\ ' ").
_SEPARATORS = re.compile(r"(?:%[0-9A-Fa-f]{2}|[@:/?#&=;%+\s\\'\"])+")


# skiplock's own connections are psycopg2's, whichever libpq driver the URL names:
# its time bounds (queue_core/database/bounds.py, psycopg2's wait callback), its kept
# enqueue connection and the pool's hot statements are written against psycopg2.
# psycopg 3's URL (postgresql+psycopg://, which SQLAlchemy 2.1 also makes of a
# plain postgresql://) names the same libpq parameters, so one DATABASE_URL serves
# an application on psycopg 3 and skiplock on psycopg2. A driver with parameters
# of its own (asyncpg, pg8000) is refused: its URL may not mean the same to libpq.
_LIBPQ_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg")


def normalize(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, postgresql+psycopg://)
    and use psycopg2."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _LIBPQ_SCHEMES:
        url = "postgresql+psycopg2://" + rest
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"DATABASE_URL is not a database URL: {redact(url)} (a port must be a number; "
            "percent-encode @ : / ? # in a user name or password)"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"skiplock needs PostgreSQL, not {parsed.get_backend_name()}")
    if parsed.get_driver_name() != "psycopg2":
        raise ConfigurationError(
            f"DATABASE_URL names the driver {parsed.get_driver_name()}, whose parameters libpq "
            "may not read alike: skiplock connects through libpq (psycopg2); write "
            "postgresql:// or postgresql+psycopg://")
    if parsed.host and "@" in parsed.host:
        raise ConfigurationError(
            f"DATABASE_URL has an unescaped @ in its user name or password: {redact(url)} "
            "(write @ as %40)"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigurationError(f"DATABASE_URL has a port out of range: {redact(url)}")
    return url


def redact(url: Any) -> str:
    """The URL with its password masked; never print or log a URL without this."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        if re.match(r"\s*\w+\s*=", text) and "@" not in text:  # libpq's key=value form
            return _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        return "<not a database URL>"
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if not _PLAIN_USER.fullmatch(user):  # the last @ was not the userinfo's: show nothing
            user, colon = MASK, ""
        prefix, rest = f"{scheme}://{user}{':' + MASK if colon else ''}@", rest[at + 1:]
    else:
        prefix = f"{scheme}://"
    location, question, query = rest.partition("?")
    if question:
        location += "?" + "&".join(_mask_parameter(item) for item in query.split("&"))
    return prefix + location


def _mask_parameter(item: str) -> str:
    name, equals, _ = item.partition("=")
    if equals and _SECRET_NAME.search(unquote_plus(name)):
        return f"{name}={MASK}"
    return item


def secrets_of(url: str | None) -> list[str]:
    """Every form of the password(s) in `url`, longest first (what `scrub` removes)."""
    if not url:
        return []
    text = str(url)
    found: list[str] = []
    scheme, sep, rest = text.partition("://")
    if not sep:  # libpq's key=value form, or a URL that lost its scheme
        found += [m.group(3).strip("'") for m in _KEYWORD_SECRET.finditer(text)]
        rest = text
    at = rest.rfind("@")
    if at >= 0:
        _, colon, password = rest[:at].partition(":")
        if colon:
            found.append(password)
    # Every name=value anywhere: a query the last @ would hide is still read.
    for item in re.split(r"[?&]", text):
        name, equals, value = item.partition("=")
        if equals and _SECRET_NAME.search(unquote_plus(name)):
            found.append(value)
    forms: set[str] = set()
    for secret in found:
        for form in (secret, unquote(secret), unquote_plus(secret)):
            if form:
                forms.add(form)
                # A driver that misread the URL shows pieces of it (a host "pw@host").
                forms.update(part for part in _SEPARATORS.split(form) if len(part) >= 3)
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, url: str | None) -> str:
    """`text` without any form of the password of `url`."""
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def database_url(settings: Settings | None = None, *, start: bool = False) -> str:
    """DATABASE_URL if set, else the embedded cluster's URL.

    The embedded cluster is used only if it runs (EmbeddedNotRunning, one line,
    if not). `start=True` may initialise and start it: only the commands that
    exist to bring a database up pass it (`worker`, `migrate`, `demo`, `db
    start`), never a path an application or a read-only command takes, so that
    nothing starts a server, or runs initdb in a stray directory, behind anyone's back.
    """
    settings = settings or load_settings()
    if settings.database_url:
        return normalize(settings.database_url)
    from skiplock.queue_core.database import embedded

    return embedded.start(settings) if start else embedded.running_url(settings)


def libpq_dsn(url: str, *, with_password: bool = True) -> str:
    """The URL as libpq's `key=value` string (psycopg2.connect, psql, pgbench).

    Not a URI: libpq does not read `+` in a URI's query as a space, and a socket
    directory may hold spaces or quotes; make_dsn quotes every value. For a
    command line (which `ps` shows to everyone) leave the password out and pass
    it as PGPASSWORD in the environment instead.
    """
    from psycopg2.extensions import make_dsn

    parsed = make_url(url)
    params: dict[str, Any] = {"host": parsed.host, "port": parsed.port, "user": parsed.username,
                              "password": parsed.password if with_password else None,
                              "dbname": parsed.database}
    for key, value in parsed.query.items():
        if with_password or not _SECRET_NAME.search(key):
            params[key] = value[-1] if isinstance(value, tuple) else value
    return str(make_dsn(**{k: str(v) for k, v in params.items() if v is not None}))
