"""Reading and shaping the job table directly, for the dashboard's tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from skiplock.queue_core import get_job
from skiplock.queue_core.database import db


def status(job_id: str) -> str | None:
    job = get_job(job_id)
    return job.status if job else None


def sql(statement: str, **params: Any) -> list[Any]:
    with db.get_engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return list(result) if result.returns_rows else []


def make_dead(job_id: str, error: str = "boom") -> None:
    sql("""UPDATE "WorkerJob" SET status = 'DEAD_LETTER', attempts = "maxAttempts",
           "completedAt" = now(), "lastError" = :error WHERE id = :id""", id=job_id, error=error)


def logged_actions() -> list[Any]:
    return sql('SELECT who, address, action, target, affected FROM "DashboardAction" ORDER BY id')
