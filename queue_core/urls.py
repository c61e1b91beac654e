"""Which database to talk to, and how to print its URL without the password."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from skiplock.queue_core.config import Settings, load_settings
from skiplock.queue_core.errors import ConfigurationError


def normalize(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://) and use psycopg2."""
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"DATABASE_URL is not a database URL: {redact(url)}") from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(f"skiplock needs PostgreSQL, not {parsed.get_backend_name()}")
    return url


def redact(url: str) -> str:
    """The URL with its password replaced by ***; never print or log a URL without this."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: show nothing that could be a secret
        return "<unparseable database URL>"


def database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL if set, else the embedded cluster (started on demand)."""
    settings = settings or load_settings()
    if settings.database_url:
        return normalize(settings.database_url)
    from skiplock.queue_core.embedded import EmbeddedCluster

    return EmbeddedCluster(settings.home_path).ensure_running()


def libpq_dsn(url: str) -> str:
    """The URL as libpq's `key=value` string (psycopg2.connect, psql, pgbench).

    Not a URI: libpq does not read `+` in a URI's query as a space, and a socket
    directory may hold spaces or quotes; make_dsn quotes every value.
    """
    from psycopg2.extensions import make_dsn

    parsed = make_url(url)
    params: dict[str, Any] = {"host": parsed.host, "port": parsed.port, "user": parsed.username,
                              "password": parsed.password, "dbname": parsed.database}
    for key, value in parsed.query.items():
        params[key] = value[-1] if isinstance(value, tuple) else value
    return str(make_dsn(**{k: str(v) for k, v in params.items() if v is not None}))
