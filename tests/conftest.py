"""One real PostgreSQL database for the whole run, emptied before each test.

See `queue_core/database/scratch.py` for which server: TEST_DATABASE_URL, DATABASE_URL,
127.0.0.1:5432 if it answers, else the embedded cluster (SKIPLOCK_HOME, else the
per-user default, as every command finds it). The run's database is
created, migrated, exported as DATABASE_URL for subprocesses, and dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from skiplock.queue_core.database import db
from skiplock.queue_core.database.scratch import scratch_database


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    # The built-in handlers' demo domain too: the handler tests run the six job types.
    with scratch_database("skiplock_test", demo=True) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_tables(database_url: str) -> None:
    """Every test starts from empty tables (the schema stays)."""
    with db.get_engine().begin() as conn:
        tables = conn.execute(text(
            "SELECT quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'skiplock_version'"
        )).scalars().all()
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))


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
