"""Looking at the queue and keeping it small: stats, get_job, retry_dead, cleanup."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from skiplock.queue_core import sql
from skiplock.queue_core.database.borrowed import BorrowedConnection
from skiplock.queue_core.database.db import Joinable, connect
from skiplock.queue_core.durations import parse_duration
from skiplock.queue_core.errors import InvalidJob, PermissionDenied
from skiplock.queue_core.features import fairness, history, limits, rates, sequences
from skiplock.queue_core.jobs import Job

log = logging.getLogger("skiplock.maintenance")

CLEANUP_BATCH_SIZE = 5000
FINISHED_STATUSES = ("COMPLETED", "DEAD_LETTER", "FAILED")  # FAILED: cancelled


@dataclass
class QueueStats:
    """The original service's QueueStats, plus what an operator needs to see a backlog."""

    pending: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0
    dead_letter: int = 0
    ready: int = 0  # pending and due now
    scheduled: int = 0  # pending, due later (delayed or backing off)
    oldest_ready_age_s: float | None = None
    by_type: dict[str, int] = field(default_factory=dict)  # pending jobs by type
    ready_by_type: dict[str, int] = field(default_factory=dict)
    processing_by_type: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The original service's camelCase keys (pending, deadLetter, byType, ...)."""
        return {camel(k): v for k, v in asdict(self).items()}


def camel(name: str) -> str:
    """`dead_letter` or `DEAD_LETTER` -> `deadLetter` (the original service's JSON keys)."""
    head, *rest = name.lower().split("_")
    return head + "".join(part.title() for part in rest)


def stats(conn: Joinable | None = None) -> QueueStats:
    """Exact counts by status (a scan of the table: `skiplock stats` estimates
    COMPLETED instead, see `skiplock.ops.health`), and the pending breakdown."""
    with connect(conn, autocommit=True) as c:
        result = pending_breakdown(c)
        for row in c.execute(sql.COUNT_BY_STATUS):
            setattr(result, row.status.lower(), int(row.n))
    return result


def pending_breakdown(conn: Connection | BorrowedConnection) -> QueueStats:
    """Pending by type, ready vs scheduled, the oldest ready job, running by type:
    read through the partial indexes, cheap on any table size. Counts stay 0."""
    result = QueueStats()
    oldest: list[float] = []
    for row in conn.execute(sql.PENDING_BY_TYPE):
        result.by_type[row.type] = int(row.ready + row.scheduled)
        result.ready_by_type[row.type] = int(row.ready)
        result.ready += int(row.ready)
        result.scheduled += int(row.scheduled)
        if row.oldest_ready_s is not None:
            oldest.append(float(row.oldest_ready_s))
    for row in conn.execute(sql.PROCESSING_BY_TYPE):
        result.processing_by_type[row.type] = int(row.n)
    result.oldest_ready_age_s = max(oldest) if oldest else None
    return result


def get_job(job_id: str, conn: Joinable | None = None) -> Job | None:
    with connect(conn, autocommit=True) as c:
        row = c.execute(sql.GET_JOB, {"id": job_id}).first()
    return Job.from_row(row) if row else None


def retry_dead(ids: Iterable[str] | None = None, *, job_type: str | None = None,
               all_dead: bool = False, from_start: bool = False,
               conn: Joinable | None = None) -> list[str]:
    """Move dead-lettered jobs back to PENDING with fresh attempts; return their ids.

    Exactly one selector: `ids`, `job_type`, or `all_dead=True`. Given `ids`,
    cancelled jobs (FAILED) are retried too; `job_type` and `all_dead` move dead
    letters only, so that a bulk retry never undoes a cancel. A retried job
    starts over: no attempt, interruption or snooze counted, and no cancel
    request left from its last run. It keeps its checkpoint, and resumes from
    it (`skiplock.last_checkpoint()`), unless `from_start`. Given `ids`, a
    dependent that waits for its parents (queue_core/features/dependencies.py)
    is let go, to run now. Jobs in any other state are left alone (and not
    returned).
    """
    chosen = [ids is not None, job_type is not None, all_dead]
    if sum(chosen) != 1:
        raise InvalidJob("retry_dead needs exactly one of: ids, job_type, all_dead=True")
    params: dict[str, Any]
    if ids is not None:
        statement, params = sql.RETRY_IDS, {"ids": list(ids)}
    elif job_type is not None:
        statement, params = sql.RETRY_DEAD_TYPE, {"type": job_type}
    else:
        statement, params = sql.RETRY_DEAD_ALL, {}
    params["keep_checkpoint"] = not from_start

    def retry() -> list[str]:
        with connect(conn, autocommit=True) as c:
            retried = [row.id for row in c.execute(statement, params)]
            if ids is not None and len(retried) < len(params["ids"]):
                # Named, a dependent that waits (a held one, say) runs now, without its
                # parents.
                rest = [i for i in params["ids"] if i not in set(retried)]
                retried += [row.id for row in c.execute(sql.RELEASE_WAITING, {"ids": rest})]
        return retried

    # A dead letter the mover moves to history meanwhile (SQLSTATE 40001): once more,
    # on our own connection (a caller's transaction is aborted by the error: theirs).
    retried = retry() if conn is not None else history.again_if_moved(retry)
    if retried:
        log.info("moved %d dead-lettered jobs back to PENDING", len(retried))
    return retried


def cleanup(older_than: float | timedelta | str = "7d", *,
            statuses: Iterable[str] = FINISHED_STATUSES,
            batch_size: int = CLEANUP_BATCH_SIZE,
            report: list[str] | None = None) -> int:
    """Forget finished jobs older than `older_than`; return how many (those of dropped
    history partitions as the planner counts them).

    First every history partition whose upper bound is `older_than` ago or more is
    detached and dropped (queue_core/features/history.py): retention in whole partitions
    (a day each unless `skiplock.history_width` says otherwise), so a job may stay up to
    one width longer. Without dead letters in `statuses`, a partition that holds one is
    kept. The partitions ahead are made, and "WorkerJobHistory" analyzed. Then the
    finished jobs still live and older than `older_than` are deleted in batches, each its
    own short transaction (cleanup never holds many locks on the hot table, nor pins the
    vacuum horizon for long), and the mover takes what is due for history. Then it
    repairs the slot counts of concurrency keys (`limits.recount_slots`), forgets idle
    keys, and lets in the jobs of fair keys whose window has room
    (`fairness.fill_turns`). `report` hears what was done, line by line.
    """
    age = parse_duration(older_than)
    if age < 0:
        raise InvalidJob("older_than must not be negative")
    wanted = list(statuses)
    if not set(wanted) <= set(FINISHED_STATUSES):
        raise InvalidJob("cleanup only deletes finished jobs (COMPLETED, DEAD_LETTER, FAILED)")
    lines = report if report is not None else []
    try:
        kept = history.drop_older(timedelta(seconds=age),
                                  keep_dead="DEAD_LETTER" not in wanted)
    except PermissionDenied as exc:
        # Detaching and dropping partitions takes the table's owner (docs/operations.md).
        log.warning("history partitions not dropped: %s", exc)
        lines.append(f"history partitions not dropped: {exc}")
        kept = history.Retention()
    lines.extend(history.describe(kept))
    total = kept.rows
    # Old finished jobs still live (the mover had not taken them: none, normally) are
    # deleted before the mover would make them history of today.
    deleted_live = 0
    def delete_batch() -> int:
        with connect(autocommit=True) as c:
            return int(c.execute(sql.CLEANUP_BATCH, {"statuses": wanted, "older_than_s": age,
                                                     "batch": batch_size}).rowcount)

    while True:
        # A row the mover moved to history after this batch's snapshot was taken cannot
        # be locked (40001): the batch runs again, and skips what is history now.
        deleted = history.again_if_moved(delete_batch)
        deleted_live += deleted
        if deleted < batch_size:
            break
    if deleted_live:
        lines.append(f"deleted {deleted_live} old finished jobs that were still live")
    total += deleted_live
    moved = history.move()
    if moved:
        lines.append(f"moved {moved} finished jobs to history")
    if total:
        log.info("cleaned up %d finished jobs older than %s", total, older_than)
    try:
        fixed = limits.recount_slots()  # counts that something bypassing the triggers broke
    except PermissionDenied as exc:
        # A role granted what skiplock needed before the recount existed: the jobs are
        # deleted all the same, and the line names the grant.
        log.warning("slot counts of concurrency keys not checked: %s", exc)
    else:
        if fixed:
            log.warning("recounted the slots of %d concurrency keys whose counts were wrong",
                        fixed)
    limits.prune_idle_keys()  # the counters of concurrency keys nobody uses any more
    sequences.prune_idle_sequences()  # and the lines of sequences with nobody in them
    try:
        fairness.fill_turns()  # fair keys with room in their window and jobs waiting
    except PermissionDenied as exc:
        log.warning("fair keys not checked: %s", exc)
    rates.prune_idle_keys()  # and the windows of rate keys
    return total
