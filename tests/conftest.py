"""One real PostgreSQL database for the whole run, emptied before each test.

Which server: TEST_DATABASE_URL, else DATABASE_URL, else a server on
127.0.0.1:5432 if one answers, else the embedded cluster (the same code as
`skiplock`'s embedded default). Whichever it is, the run creates its own
database, migrates it to head, points DATABASE_URL at it (so subprocesses such
as `skiplock worker` use it too) and drops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from queue_core import config, db, migrate
from queue_core.urls import libpq_dsn, normalize

ROOT = Path(__file__).resolve().parent.parent


def _admin_url() -> str:
    for name in ("TEST_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(name):
            return normalize(os.environ[name])
    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres",
                         connect_timeout=3).close()
        return "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    except psycopg2.OperationalError:
        from queue_core.embedded import EmbeddedCluster

        return EmbeddedCluster(ROOT / ".skiplock").ensure_running()


def _admin(url: str, statement: str) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    admin = _admin_url()
    name = f"skiplock_test_{uuid.uuid4().hex[:10]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    config.clear_cache()
    db.reset_engine()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        db.reset_engine()
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        _admin(admin, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(autouse=True)
def clean_tables(database_url: str) -> None:
    """Every test starts from empty tables (the schema stays)."""
    with db.get_engine().begin() as conn:
        tables = conn.execute(text(
            "SELECT quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )).scalars().all()
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
