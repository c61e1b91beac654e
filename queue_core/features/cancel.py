"""Cancelling jobs: a pending job never starts, a running one is stopped within a heartbeat.

A cancel goes through the database only, so it reaches whichever host runs
the job and needs no LISTEN (it works behind PgBouncer in transaction mode):

- PENDING: the job ends FAILED at once, `lastError` "cancelled by WHO at
  WHEN while pending".
- PROCESSING: the request is recorded ("cancelRequestedAt", "cancelledBy").
  The master that holds the job reads it in its next heartbeat's answer,
  ends the job FAILED (fenced: a job that completed meanwhile stays
  completed) and stops the child with SIGQUIT: the handler's transaction
  rolls back, so its writes and the next job of its chain vanish with it.
- finished (COMPLETED, FAILED, DEAD_LETTER): nothing changes, and the answer
  says so.

A running job whose attempt ends some other way before its master reads the
request (it fails and waits for a retry, its host dies) keeps the request:
the worker that claims it next ends it without running it ("cancelled ...
before it started"). If that attempt was its last, the request stays on the
dead letter; `retry_dead` drops it (the retry is the later decision), and
retries a cancelled job too when given its id.

FAILED is the Prisma schema's own status, which the original service never
writes, so a cancelled job is told apart from a dead letter without a new enum
value.
"""

from __future__ import annotations

import enum
import getpass
import socket
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause
from sqlalchemy.orm import Session

from skiplock.queue_core import sql
from skiplock.queue_core.database import steps
from skiplock.queue_core.database.db import Joinable, connect
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.jobs import Fenced

BATCH = 1000


class CancelOutcome(enum.StrEnum):
    CANCELLED = "cancelled"  # was pending: FAILED now, it never starts
    CANCELLING = "cancelling"  # running: its master stops it within a heartbeat
    FINISHED = "finished"  # had already ended: nothing changed
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class CancelResult:
    job_id: str
    outcome: CancelOutcome
    status: str | None  # the job's status after the call (None: no such job)
    dry_run: bool = False

    def describe(self) -> str:
        """One line for a person: what happened (or would happen) to the job."""
        would = "would be " if self.dry_run else ""
        if self.outcome is CancelOutcome.CANCELLED:
            return f"{self.job_id}: {would}cancelled (was pending, never started)"
        if self.outcome is CancelOutcome.CANCELLING:
            return (f"{self.job_id}: {'would be stopped' if self.dry_run else 'stopping'}: "
                    "running, its worker stops it within a heartbeat")
        if self.outcome is CancelOutcome.FINISHED:
            return f"{self.job_id}: already finished ({self.status}), nothing changed"
        return f"{self.job_id}: no such job"

    def to_dict(self) -> dict[str, object]:
        return {"id": self.job_id, "outcome": self.outcome.value, "status": self.status,
                "dryRun": self.dry_run}


def default_canceller() -> str:
    """Who cancels when the caller does not say: `user@host` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def who_cancels(by: str | None) -> str:
    """`by`, checked, or the default canceller."""
    who = by if by is not None else default_canceller()
    if not isinstance(who, str) or not who.strip() or len(who) > 200 or "\x00" in who:
        raise InvalidJob("`by` must name who cancels, in at most 200 characters")
    return who


def cancel(job_id: str, *, by: str | None = None,
           conn: Joinable | None = None) -> CancelResult:
    """Cancel one job; the result says what happened (see `CancelOutcome`)."""
    return cancel_many([job_id], by=by, conn=conn)[0]


def cancel_many(job_ids: Iterable[str], *, by: str | None = None,
                conn: Joinable | None = None) -> list[CancelResult]:
    """Cancel each job; one result per id, in the order given."""
    ids = list(dict.fromkeys(job_ids))
    who = who_cancels(by)
    with connect(conn, autocommit=True) as c:
        return steps.run(cancel_steps(ids, who), lambda step: c.execute(*step))


def cancel_steps(ids: list[str], who: str
                 ) -> Generator[tuple[TextClause, dict[str, Any]], Any, list[CancelResult]]:
    """The statements of `cancel_many` (distinct `ids`, a checked `who`), each sent back
    its result, and the results; `skiplock.acancel` runs the same (queue_core/database/
    steps.py)."""
    results: dict[str, CancelResult] = {}
    for start in range(0, len(ids), BATCH):
        page = ids[start:start + BATCH]
        for row in (yield sql.CANCEL_REQUEST, {"ids": page, "by": who}):
            outcome = (CancelOutcome.CANCELLED if row.status == "FAILED"
                       else CancelOutcome.CANCELLING)
            results[row.id] = CancelResult(row.id, outcome, row.status)
        missing = [i for i in page if i not in results]
        if missing:
            for row in (yield sql.STATUS_OF, {"ids": missing}):
                results[row.id] = CancelResult(row.id, CancelOutcome.FINISHED, row.status)
    return [results.get(i) or CancelResult(i, CancelOutcome.NOT_FOUND, None) for i in ids]


def cancel_matching(*, job_type: str | None = None, user_id: str | None = None,
                    by: str | None = None, dry_run: bool = False,
                    conn: Joinable | None = None) -> list[CancelResult]:
    """Cancel every pending or running job of a type and/or a user.

    With `dry_run`, change nothing and say what would happen to each job."""
    if job_type is None and user_id is None:
        raise InvalidJob("say which jobs to cancel: a type, a user, or both")
    who = who_cancels(by)
    results: list[CancelResult] = []
    after = ""
    with connect(conn, autocommit=True) as c:
        while True:
            rows = c.execute(sql.CANCEL_CANDIDATES, {"type": job_type, "user_id": user_id,
                                                     "after": after, "batch": BATCH}).fetchall()
            if not rows:
                break
            after = rows[-1].id
            if dry_run:
                results.extend(
                    CancelResult(r.id, CancelOutcome.CANCELLED if r.status == "PENDING"
                                 else CancelOutcome.CANCELLING, r.status, dry_run=True)
                    for r in rows)
            else:
                results.extend(r for r in cancel_many([r.id for r in rows], by=who, conn=c)
                               if r.outcome is not CancelOutcome.NOT_FOUND)
    return results


def end_cancelled(job: Fenced, *, started: bool = True, ran: bool = False,
                  conn: Connection | Session | None = None) -> bool:
    """End a claimed job whose cancel was read: FAILED, fenced. False if the job had
    already ended or moved on (nothing changed). `started=False`: its handler never
    ran (the cancel came while the job was in a worker's batch, or waiting to be
    retried). `ran`: its handler ran to an end and its outcome waits for its
    group's commit."""
    phase = ("after it ran, before its commit" if ran else
             "while running" if started else "before it started")
    with connect(conn, autocommit=True) as c:
        return c.execute(sql.CANCEL_RUNNING, {"id": job.id, "locked_by": job.locked_by,
                                              "attempts": job.attempts,
                                              "phase": phase}).rowcount == 1
