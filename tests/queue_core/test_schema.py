"""The migration and the SQLAlchemy mirror in queue_core/schema.py agree."""

from __future__ import annotations

from sqlalchemy import inspect

from skiplock.queue_core.database import db
from skiplock.queue_core.schema import worker_job


def test_migrated_table_matches_the_model():
    inspector = inspect(db.get_engine())
    columns = {c["name"]: c for c in inspector.get_columns("WorkerJob")}
    assert set(columns) == {c.name for c in worker_job.columns}
    for column in worker_job.columns:
        assert columns[column.name]["nullable"] == column.nullable, column.name


def test_table_storage_parameters_are_set():
    from tests.queue_core.helpers import sql

    [(options,)] = sql("""SELECT reloptions FROM pg_class WHERE relname = 'WorkerJobLive'""")
    assert "fillfactor=85" in options
    assert "autovacuum_vacuum_scale_factor=0.02" in options
