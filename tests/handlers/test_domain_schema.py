"""The migration demo_0001_domain and the mirror in handlers/domain/schema.py agree."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from skiplock.handlers.domain.schema import metadata
from skiplock.queue_core.database import db


def test_migrated_domain_tables_match_the_model(database_url):
    with db.get_engine().connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    # The job table and alembic's own are not in this metadata: ignore their "remove" entries.
    ours = [d for d in diff if not (d[0] in ("remove_table", "remove_index", "remove_fk")
                                    and _table_of(d) not in metadata.tables)]
    assert ours == []


def _table_of(entry: tuple) -> str:
    obj = entry[1]
    table = getattr(obj, "table", obj)
    return getattr(table, "name", "")
