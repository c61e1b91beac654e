"""Test helpers for applications: run queued jobs inline, and look at what was enqueued.

    from skiplock import testing

    def test_signup_sends_a_welcome_email():
        signup("ada@example.com")                       # your code enqueues SEND_EMAIL
        testing.assert_enqueued("SEND_EMAIL", {"to": "ada@example.com"})
        report = testing.drain()                        # runs it, and what it enqueues
        assert report.outcomes == {"completed": 1}

Everything runs against the application's real database (DATABASE_URL, as
the application and the workers use it), in the calling process, with the
handlers registered there: import your handler modules first. `drain()` runs
each job as a pool child would: the handler's writes, the jobs it enqueues
and the completion commit in one transaction (`skiplock.queue_core.database.db.
transaction()` yields it), a failure rolls them back and is retried after its
backoff, a snooze puts the job back. `skiplock.last_checkpoint()` gives the
handler what the job's last run checkpointed, and a failure or a snooze
writes the run's latest `skiplock.checkpoint` as a pool would (a completion
clears it). Nothing forks and nothing sends a heartbeat: a handler's
exceptions are recorded, never raised into the test, and a job that the
handler leaves running never ends.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skiplock.handlers import registry
from skiplock.handlers.registry import JobResult
from skiplock.queue_core import claim, complete, fail, sql
from skiplock.queue_core.database import db
from skiplock.queue_core.errors import InvalidPayload, SkiplockError
from skiplock.queue_core.features import checkpoints
from skiplock.queue_core.features.cancel import end_cancelled
from skiplock.queue_core.features.snooze import snooze
from skiplock.queue_core.jobs import Job
from skiplock.queue_core.payloads import parse_payload

WORKER_ID = "skiplock.testing"
ALL_STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "DEAD_LETTER")


class DrainLimit(SkiplockError):
    """drain() ran its maximum number of jobs and the queue still had work (a loop?)."""


@dataclass(frozen=True)
class Ran:
    """One job `drain` ran: its id, type, what became of it, and the error if any."""

    id: str
    type: str
    outcome: str  # completed, retried, dead_lettered, snoozed, cancelled, lost
    error: str | None = None


@dataclass
class DrainReport:
    ran: list[Ran] = field(default_factory=list)

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(Counter(r.outcome for r in self.ran))

    @property
    def errors(self) -> list[str]:
        return [f"{r.type} {r.id}: {r.error}" for r in self.ran if r.error]


def drain(types: Sequence[str] | None = None, *, run_scheduled: bool = False,
          max_jobs: int = 10_000) -> DrainReport:
    """Run every due job (of `types`) inline, and the jobs they enqueue, until none is due.

    With `run_scheduled`, delayed jobs and retries are made due and run too
    (so a failing job runs until its attempts are used up). Raises DrainLimit
    after `max_jobs` runs."""
    report = DrainReport()
    type_list = list(types) if types is not None else None
    while True:
        if run_scheduled:
            with db.connect(autocommit=True) as conn:
                conn.execute(sql.MAKE_DUE, {"types": type_list})
        jobs = claim(WORKER_ID, limit=1, types=type_list)
        if not jobs:
            return report
        if len(report.ran) >= max_jobs:
            raise DrainLimit(f"drain() ran {max_jobs} jobs and more are due; last ones: "
                             + ", ".join(r.type for r in report.ran[-5:]))
        report.ran.append(run(jobs[0]))


def run(job: Job) -> Ran:
    """Run one claimed job's handler in its transaction, and settle it."""
    registration = registry.get_registration(job.type)
    if job.cancel_requested_at is not None:  # cancelled while it waited for a retry
        return Ran(job.id, job.type,
                   "cancelled" if end_cancelled(job, started=False) else "lost")
    try:
        # A typed registration's handler is given its model instance, as in a pool.
        payload = (parse_payload(job.type, job.payload) if registration is None
                   else registration.payload_for(job.payload))
    except InvalidPayload as exc:
        return _failed(job, str(exc), retry=False)
    if registration is None:
        return _failed(job, f"no handler registered for job type {job.type} in this process",
                       retry=False)
    checkpoints.begin(job.id, job.checkpoint)
    try:
        with db.connect() as conn, db.bind_job_connection(conn):
            result = registration.fn(payload, job.id)
            if not isinstance(result, JobResult):
                raise TypeError(f"handler of {job.type} returned {type(result).__name__}, "
                                "not a JobResult")
            if not result.success:
                raise _Unsuccessful(result)
            if not complete(job, result.data, conn=conn):
                raise _Unsuccessful(JobResult(False, error="lost"))
    except _Unsuccessful as exc:
        if exc.result.snooze_s is not None:
            return Ran(job.id, job.type, snooze(job, exc.result.snooze_s,
                                                registration.max_snoozes,
                                                checkpoint=checkpoints.taken(job.id)))
        if exc.result.error == "lost":
            return Ran(job.id, job.type, "lost")
        return _failed(job, exc.result.error or "handler reported failure",
                       retry=exc.result.should_retry)
    except Exception as exc:  # recorded, as a worker would record it
        return _failed(job, f"{type(exc).__name__}: {exc}", retry=True)
    return Ran(job.id, job.type, "completed")


class _Unsuccessful(Exception):
    def __init__(self, result: JobResult) -> None:
        super().__init__(result.error)
        self.result = result


def _failed(job: Job, error: str, *, retry: bool) -> Ran:
    status = fail(job, error, retry=retry, checkpoint=checkpoints.taken(job.id))
    outcome = {"PENDING": "retried", "DEAD_LETTER": "dead_lettered"}.get(status or "", "lost")
    return Ran(job.id, job.type, outcome, error)


def enqueued(job_type: str | None = None, payload: Mapping[str, Any] | None = None, *,
             statuses: Iterable[str] = ("PENDING",)) -> list[Job]:
    """Jobs of `job_type` (any type if None) whose payload contains `payload`, in the
    order they were enqueued; PENDING ones unless `statuses` says otherwise."""
    wanted = list(statuses)
    unknown = set(wanted) - set(ALL_STATUSES)
    if unknown:
        raise ValueError(f"unknown statuses: {', '.join(sorted(unknown))}")
    with db.connect(autocommit=True) as conn:
        rows = conn.execute(sql.FIND_JOBS, {"type": job_type, "statuses": wanted,
                                            "payload": json.dumps(dict(payload or {}))})
        return [Job.from_row(row) for row in rows]


def assert_enqueued(job_type: str, payload: Mapping[str, Any] | None = None, *,
                    count: int | None = None, **options: Any) -> list[Job]:
    """Fail the test unless a pending job of `job_type` with (at least) `payload` exists
    (exactly `count` of them, if given); return them."""
    found = enqueued(job_type, payload, **options)
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    present = enqueued(None, None, **options)
    listing = "\n".join(f"  {j.type} {json.dumps(j.payload, sort_keys=True)}"
                        for j in present[:20]) or "  (none)"
    wanted = "" if count is None else f"{count} "
    raise AssertionError(
        f"expected {wanted}{job_type} job(s) with payload containing "
        f"{json.dumps(dict(payload or {}), sort_keys=True)}, found {len(found)}; "
        f"the queue holds:\n{listing}")


def refute_enqueued(job_type: str, payload: Mapping[str, Any] | None = None,
                    **options: Any) -> None:
    """Fail the test if a pending job of `job_type` with (at least) `payload` exists."""
    assert_enqueued(job_type, payload, count=0, **options)
