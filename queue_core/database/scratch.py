"""Throwaway databases for the test suite and the benchmarks.

Which server: TEST_DATABASE_URL, else DATABASE_URL, else a server on
127.0.0.1:5432 if one answers, else the embedded cluster (SKIPLOCK_HOME, else
the per-user default, started if needed). A scratch database is created
there, migrated to the latest revision, made the process's DATABASE_URL (so that
subprocesses such as `skiplock worker` use it too) and dropped afterwards.
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


@contextmanager
def scratch_database(prefix: str = "skiplock_scratch", *, demo: bool = False,
                     migrated: bool = True) -> Iterator[str]:
    """A new database, migrated (with the built-in handlers' demo domain if `demo`; left
    empty without `migrated`), dropped after."""
    admin = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_admin(admin, f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    config.clear_cache()
    db.reset_engine()
    try:
        if migrated:
            migrate.upgrade(url, demo=demo)
        yield url
    finally:
        db.reset_engine()
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        config.clear_cache()
        run_admin(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        run_admin(admin, f'DROP DATABASE IF EXISTS "{name}"')
