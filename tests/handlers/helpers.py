"""Helpers for the handler tests: run a handler as a pool child would, read the tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from skiplock import handlers
from skiplock.handlers.registry import JobResult
from skiplock.queue_core.database.db import transaction


def run_handler(job_type: str, payload: Any) -> JobResult:
    fn = handlers.get_handler(job_type)
    assert fn is not None, job_type
    return fn(payload, "test-job")


def rows(sql: str, **params: Any) -> list[Any]:
    with transaction() as conn:
        return list(conn.execute(text(sql), params))


def scalar(sql: str, **params: Any) -> Any:
    with transaction() as conn:
        return conn.execute(text(sql), params).scalar()


def jobs_of(job_type: str) -> list[Any]:
    return rows('SELECT * FROM "WorkerJob" WHERE type = :t ORDER BY "createdAt", id', t=job_type)


