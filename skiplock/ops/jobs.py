"""Listing jobs for operators (`skiplock jobs`), newest first, through the partial indexes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from skiplock.ops import sql
from skiplock.queue_core.database.db import connect


def list_jobs(status: str | None = None, job_type: str | None = None,
              user_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` jobs that match every filter given, as plain dicts."""
    status = status.upper() if status else None
    params: dict[str, Any] = {"status": status, "type": job_type, "user_id": user_id,
                              "limit": limit}
    filters = " ".join(clause for name, clause in sql.JOBS_FILTERS.items()
                       if params[name] is not None)
    statement = text(sql.LIST_JOBS.format(filters=filters, order=sql.JOBS_ORDER[status]))
    with connect() as c:
        return [dict(r._mapping) for r in c.execute(statement, params)]
