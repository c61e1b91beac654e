"""Which of Django's databases holds the queue, and how skiplock reaches it.

Django names a database by alias in `DATABASES`; skiplock by a URL. The queue
lives in the database of alias `SKIPLOCK_DATABASE` (default "default"), so that
a job written on Django's connection is in the same database, and the same
transaction, as the rows beside it. `database_url` makes the URL from the
parameters Django itself connects with (`get_connection_params`: NAME, USER,
PASSWORD, HOST, PORT and the libpq keywords of OPTIONS, such as sslmode), so
both read the settings alike; a socket directory, or several hosts, go in the
query as libpq reads them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from skiplock.queue_core.errors import ConfigurationError

# What `get_connection_params` adds for the driver alone (psycopg's adapters, its
# cursor class, prepared statements): not libpq's, and refused by libpq.
_DRIVER_ONLY = frozenset({"context", "cursor_factory", "prepare_threshold", "row_factory",
                          "autocommit"})


def skiplock_alias() -> str:
    """The alias of the database that holds the queue (setting SKIPLOCK_DATABASE)."""
    from django.conf import settings

    return str(getattr(settings, "SKIPLOCK_DATABASE", "default"))


def wrapper(using: str | None = None) -> Any:
    """Django's connection object for `using` (default: SKIPLOCK_DATABASE), PostgreSQL's
    or a ConfigurationError that says what it is instead."""
    from django.db import connections

    alias = using or skiplock_alias()
    if alias not in connections:
        raise ConfigurationError(f"SKIPLOCK_DATABASE names {alias!r}, which DATABASES lacks")
    found = connections[alias]
    if found.vendor != "postgresql":
        raise ConfigurationError(
            f"skiplock needs PostgreSQL: DATABASES[{alias!r}] is {found.vendor} "
            f"({found.settings_dict.get('ENGINE')}); use django.db.backends.postgresql, "
            "or set SKIPLOCK_DATABASE to a PostgreSQL alias")
    return found


def connection(using: str | None = None) -> Any:
    """The driver connection (psycopg 3's or psycopg2's) under Django's, opened if need be:
    what `conn=` joins, in the transaction of the enclosing `atomic()` block if any."""
    conn = wrapper(using)
    conn.ensure_connection()
    return conn.connection


def database_url(using: str | None = None) -> str:
    """The URL of Django's database `using` (default: SKIPLOCK_DATABASE), password included:
    pass it on, never print it (skiplock.queue_core.database.urls.redact)."""
    return url_of(wrapper(using))


def url_of(conn: Any) -> str:
    """The URL of the database a Django PostgreSQL connection object connects to."""
    params = {key: value for key, value in conn.get_connection_params().items()
              if key not in _DRIVER_ONLY and value is not None and value != ""
              and isinstance(value, (str, int, float)) and not isinstance(value, bool)}
    return url_from_params(params)


def url_from_params(params: dict[str, Any]) -> str:
    """libpq's keywords (dbname, user, password, host, port, sslmode...) as a URL."""
    params = {key: str(value) for key, value in params.items()}
    user = params.pop("user", None)
    password = params.pop("password", None)
    dbname = params.pop("dbname", None)
    host = params.get("host")
    port = params.get("port")
    # A host name or address goes where a URL puts it; a socket directory (a path),
    # an IPv6 address or a list of hosts stays a libpq keyword in the query.
    in_authority = host is not None and not any(c in host for c in "/:,") and \
        (port is None or port.isdigit())
    if in_authority:
        params.pop("host")
        params.pop("port", None)
    return URL.create("postgresql", username=user, password=password,
                      host=host if in_authority else None,
                      port=int(port) if in_authority and port else None,
                      database=dbname, query=params).render_as_string(hide_password=False)
