"""Throwaway databases for the test suite and the benchmarks.

Which server: TEST_DATABASE_URL, else DATABASE_URL, else a server on
127.0.0.1:5432 if one answers, else the embedded cluster (SKIPLOCK_HOME, else
the per-user default, started if needed). A scratch database is created
there, migrated to the latest revision (or copied from a template that was, see
`copies_of_templates`), made the process's DATABASE_URL (so that subprocesses
such as `skiplock worker` use it too) and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from sqlalchemy.engine import make_url

from skiplock.queue_core import config
from skiplock.queue_core.database import db, migrate
from skiplock.queue_core.database.urls import libpq_dsn, normalize

LOCAL_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """A URL on the server scratch databases are made on."""
    for name in ("TEST_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(name):
            return normalize(os.environ[name])
    try:
        psycopg2.connect(libpq_dsn(LOCAL_SERVER), connect_timeout=3).close()
        return LOCAL_SERVER
    except psycopg2.OperationalError:
        # The same cluster as every command's (SKIPLOCK_HOME, else the per-user
        # default), started, or moved from ./.skiplock, like `skiplock db start`.
        from skiplock.queue_core.database import embedded

        return embedded.start(config.load_settings())


def run_admin(url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE)."""
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


# A process that asks for many scratch databases (the test suite) has each copied
# (CREATE DATABASE ... TEMPLATE) from one it migrated once per kind, with or without
# the demo domain: a copy costs a fraction of running the migrations again.
_templates: dict[tuple[str, bool], str] = {}
_copying = False


@contextmanager
def copies_of_templates() -> Iterator[None]:
    """Within it, migrated scratch databases are copies of templates, each migrated
    once, and dropped at its end."""
    global _copying
    _copying = True
    try:
        yield
    finally:
        _copying = False
        for (server, _), name in _templates.items():
            _drop(server, name)
        _templates.clear()


def _template(admin: str, demo: bool) -> str:
    # One per server: `admin` names whichever database DATABASE_URL was (a scratch
    # database of an outer one, too), and the maintenance database outlives them all.
    server = make_url(admin).set(database="postgres").render_as_string(hide_password=False)
    if (server, demo) not in _templates:
        name = f"skiplock_template_{uuid.uuid4().hex[:10]}"
        run_admin(server, f'CREATE DATABASE "{name}"')
        _templates[server, demo] = name
        # No connection to it may be left open: a database being copied has none.
        migrate.upgrade(make_url(server).set(database=name).render_as_string(
            hide_password=False), demo=demo)
    return _templates[server, demo]


def _drop(admin: str, name: str) -> None:
    run_admin(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    run_admin(admin, f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def scratch_database(prefix: str = "skiplock_scratch", *, demo: bool = False,
                     migrated: bool = True) -> Iterator[str]:
    """A new database, migrated (with the built-in handlers' demo domain if `demo`; left
    empty without `migrated`), dropped after."""
    admin = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    copied = migrated and _copying
    template = f' TEMPLATE "{_template(admin, demo)}"' if copied else ""
    run_admin(admin, f'CREATE DATABASE "{name}"{template}')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    config.clear_cache()
    db.reset_engine()
    try:
        if migrated and not copied:
            migrate.upgrade(url, demo=demo)
        yield url
    finally:
        db.reset_engine()
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        config.clear_cache()
        _drop(admin, name)
