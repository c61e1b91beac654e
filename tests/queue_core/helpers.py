"""Small helpers for queue tests: read the table directly with SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from skiplock.queue_core import db


def sql(statement: str, **params: Any) -> list[Any]:
    with db.get_engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return result.fetchall() if result.returns_rows else []


def row(job_id: str) -> Any:
    rows = sql('SELECT *, status::text AS st FROM "WorkerJob" WHERE id = :id', id=job_id)
    return rows[0] if rows else None


def count(where: str = "true", **params: Any) -> int:
    return int(sql(f'SELECT count(*) FROM "WorkerJob" WHERE {where}', **params)[0][0])


def age_lock(job_id: str, seconds: float) -> None:
    """Pretend the job's last heartbeat was `seconds` ago."""
    sql('UPDATE "WorkerJob" SET "lockedAt" = now() - make_interval(secs => :s) WHERE id = :id',
        s=seconds, id=job_id)
