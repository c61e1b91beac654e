"""Snooze: a handler says "run me again in N seconds" without spending an attempt.

    @skiplock.handler("POLL_EXPORT")
    def poll(payload, job_id):
        if not export_ready(payload["exportId"]):
            return skiplock.JobResult.snooze(30)
        ...

The job goes back to PENDING, due in N seconds, with its attempt given back
and "snoozes" counted; a job that snoozes more often than its type allows
(`@handler(..., max_snoozes=)`, default 100) is dead-lettered instead, so a
job cannot wait forever unseen. Like a failure, a snooze rolls the handler's
writes back: the job did not do its work. A job with a concurrency key keeps
its slot while it snoozes, as it does while it waits for a retry.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.features.policy import check_delay
from skiplock.queue_core.jobs import Fenced

_OUTCOMES = {"PENDING": "snoozed", "DEAD_LETTER": "dead_lettered"}


def snooze(job: Fenced, delay_s: float, max_snoozes: int,
           conn: Connection | Session | None = None, checkpoint: str | None = None) -> str:
    """Put the job back for `delay_s` seconds; "snoozed", "dead_lettered" (too many
    snoozes) or "lost" (no longer ours: nothing changed). `checkpoint`: the run's
    latest, as JSON text, written with it (None keeps the row's)."""
    params = {"id": job.id, "locked_by": job.locked_by, "attempts": job.attempts,
              "delay_s": check_delay(delay_s, "a snooze"), "max_snoozes": max_snoozes,
              "checkpoint": checkpoint}
    with connect(conn, autocommit=True) as c:
        row = c.execute(sql.SNOOZE, params).first()
    return "lost" if row is None else _OUTCOMES[row.status]
