"""One real PostgreSQL database for the whole run, emptied before each test.

See `queue_core/scratch.py` for which server: TEST_DATABASE_URL, DATABASE_URL,
127.0.0.1:5432 if it answers, else the embedded cluster (SKIPLOCK_HOME, else the
per-user default, as every command finds it). The run's database is
created, migrated, exported as DATABASE_URL for subprocesses, and dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from skiplock.queue_core import db
from skiplock.queue_core.scratch import scratch_database


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    # The built-in handlers' demo domain too: the handler tests run the six job types.
    with scratch_database("skiplock_test", demo=True) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_tables(database_url: str) -> None:
    """Every test starts from empty tables (the schema stays)."""
    empty_written_tables()


def empty_written_tables() -> list[str]:
    """Truncate the tables written since they were last emptied; return their names.

    A TRUNCATE of every table costs tens of milliseconds (each gets a new file,
    and the commit flushes), which the many tests that touch no table, or only
    read, would pay each. A table's file has no pages after a TRUNCATE and gets
    one at its first insert, even one rolled back or deleted since, so a table
    of size zero holds no rows; the query that says which tables have pages
    costs well under a millisecond. Nothing has to be marked, so no test can be
    left with another's rows.
    """
    with db.get_engine().begin() as conn:
        written = list(conn.execute(text(
            "SELECT quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'skiplock_version' "
            "AND pg_relation_size(format('%I.%I', schemaname, tablename)) > 0"
        )).scalars())
        if written:
            conn.execute(text(f"TRUNCATE {', '.join(written)} CASCADE"))
    return written


@pytest.fixture
def user_foreign_key(database_url: str) -> Iterator[None]:
    """The foreign key an application adds from a job to its users, as docs/schema.md says
    (skiplock's "userId" has none of its own); here to the demo's "User"."""
    from tests.packaging.snippets import snippet

    with db.get_engine().begin() as conn:
        conn.execute(text(snippet("user-foreign-key", "docs/schema.md")))
    try:
        yield
    finally:
        with db.get_engine().begin() as conn:
            conn.execute(text('ALTER TABLE "WorkerJob" DROP CONSTRAINT "WorkerJob_userId_fkey"'))
