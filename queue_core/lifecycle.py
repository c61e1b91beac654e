"""The life of a claimed job: claim, heartbeat, then complete, fail or release.

Every change after the claim is fenced (see `sql.py`): it touches the row
only while it is PROCESSING, held by the same worker, at the same attempt.
A worker whose job was rescued and handed to another learns that it lost the
job (False / None) and cannot overwrite the other's outcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.queue_core import sql
from skiplock.queue_core.backoff import backoff_s
from skiplock.queue_core.db import connect
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.jobs import Fenced, Job, JobStatus

log = logging.getLogger("skiplock.queue")

MAX_ERROR_LENGTH = 64 * 1024


def claim(worker_id: str, limit: int = 1, types: Sequence[str] | None = None,
          conn: Connection | Session | None = None) -> list[Job]:
    """Take up to `limit` ready jobs (highest priority, then oldest) for `worker_id`."""
    if not worker_id:
        raise InvalidJob("worker_id must be a non-empty string")
    if limit < 1:
        return []
    params: dict[str, Any] = {"worker_id": worker_id, "limit": limit}
    statement = sql.CLAIM
    if types is not None:
        if not types:
            return []
        statement, params["types"] = sql.CLAIM_TYPES, list(types)
    with connect(conn, autocommit=True) as c:
        rows = c.execute(statement, params).fetchall()
    jobs = [Job.from_row(r) for r in rows]
    # RETURNING gives no order; hand jobs out in the claim's order.
    jobs.sort(key=lambda j: (-j.priority, j.available_at or 0, j.id))
    return jobs


def _fence(job: Fenced) -> dict[str, Any]:
    return {"id": job.id, "locked_by": job.locked_by, "attempts": job.attempts}


def clean_error(error: Any) -> str:
    """lastError as PostgreSQL can store it: text, no NUL, at most 64 KiB."""
    text = str(error) if error is not None else "unknown error"
    text = text.replace("\x00", "\\0") or "unknown error"
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 20] + " … (truncated)"
    return text


def complete(job: Fenced, result: Any = None,
             conn: Connection | Session | None = None) -> bool:
    """Mark the job COMPLETED; False if it was no longer ours (nothing changed)."""
    try:
        encoded = None if result is None else json.dumps(result, default=str, allow_nan=False)
    except ValueError:
        encoded = json.dumps(str(result))
    with connect(conn, autocommit=True) as c:
        done = c.execute(sql.COMPLETE, {**_fence(job), "result": encoded}).rowcount == 1
    if not done:
        log.warning("job %s was lost before it completed; its result is discarded", job.id,
                    extra={"job_id": job.id, "worker": job.locked_by})
    return done


def fail(job: Fenced, error: Any, retry: bool = True,
         conn: Connection | Session | None = None) -> str | None:
    """Record a failed attempt: PENDING after backoff if attempts are left and `retry`,
    else DEAD_LETTER. Returns the new status, or None if the job was no longer ours."""
    params = {**_fence(job), "error": clean_error(error), "retry": bool(retry),
              "backoff_s": backoff_s(job.attempts)}
    with connect(conn, autocommit=True) as c:
        row = c.execute(sql.FAIL, params).first()
    if row is None:
        log.warning("job %s was lost before it failed; this outcome is discarded", job.id,
                    extra={"job_id": job.id, "worker": job.locked_by})
        return None
    return str(row.status.value if isinstance(row.status, JobStatus) else row.status)


def release(job: Fenced, reason: str,
            conn: Connection | Session | None = None) -> bool:
    """Give the job back to the queue now, with its attempt, because it never ran to an end
    (the pool shut down). False if it was no longer ours."""
    with connect(conn, autocommit=True) as c:
        return c.execute(sql.RELEASE, {**_fence(job), "reason": clean_error(reason)}).rowcount == 1


@dataclass(frozen=True)
class Renewal:
    """What one heartbeat did to each lease."""

    renewed: frozenset[str]  # "lockedAt" is now
    busy: frozenset[str]  # still ours, but another session holds the row: try again soon
    gone: frozenset[str]  # no longer held by this holder at this attempt: lost

    @property
    def held(self) -> frozenset[str]:
        return self.renewed | self.busy


def renew_leases(jobs: Iterable[Fenced],
                 conn: Connection | Session | None = None) -> Renewal:
    """Refresh "lockedAt" of the given jobs in one statement that waits for no row lock."""
    jobs = list(jobs)
    if not jobs:
        return Renewal(frozenset(), frozenset(), frozenset())
    params = {"ids": [j.id for j in jobs], "lockers": [j.locked_by for j in jobs],
              "attempts": [j.attempts for j in jobs]}
    with connect(conn, autocommit=True) as c:
        rows = c.execute(sql.HEARTBEAT, params).fetchall()
    renewed = frozenset(r.id for r in rows if r.renewed)
    busy = frozenset(r.id for r in rows if r.held and not r.renewed)
    gone = frozenset(r.id for r in rows if not r.held and not r.renewed)
    return Renewal(renewed, busy, gone)


def heartbeat(jobs: Iterable[Fenced], conn: Connection | Session | None = None) -> set[str]:
    """Refresh "lockedAt" of the given jobs in one statement; return the ids still held
    (a job whose row another session has locked is held, though not refreshed)."""
    return set(renew_leases(jobs, conn).held)
