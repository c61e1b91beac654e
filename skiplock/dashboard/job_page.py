"""What a job's page says, in the order a person who opens it needs it.

Whoever opens a job (most often a failed one) asks first what became of it and
why: the page leads with its outcome in one sentence ("retrying at T",
"dead-lettered at T after attempt 3 of 3", "running on worker 2 since T"),
then the error in full, then attempts, type and timing; payload and result
come after, and the remaining columns last, each under a label. This module
turns a row into those pieces; the template only lays them out. Every value
stays plain text here: Jinja escapes it where it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from skiplock.dashboard.formats import ago, between, pretty, ts
from skiplock.queue_core.jobs import Job


@dataclass(frozen=True)
class Outcome:
    # A class of the stylesheet: completed, retrying, ready, scheduled, held, running, dead, cancelled.
    kind: str
    what: str  # "dead-lettered", "cancelled by dashboard:alice", "running on worker 2 (pid 41 on web-1)"
    when: str  # what leads to the time, its own spacing included: " at", ", ready since"
    at: datetime | None
    notes: tuple[str, ...] = ()  # "after attempt 3 of 3", "ran 1.2s", "40 % done: resizing"


@dataclass(frozen=True)
class Timing:
    label: str
    at: datetime | None
    relative: str  # "3m ago", "in 5m", or "" when there is no time


@dataclass(frozen=True)
class Field:
    label: str
    value: str
    href: str | None = None  # a link to the listing this value filters (the user's jobs)
    code: bool = False  # an identifier, shown in monospace


def outcome(job: Job, worker: Any | None, now: datetime,
            others: dict[str, Any] | None = None) -> Outcome:
    attempt = f"attempt {job.attempts} of {job.max_attempts}"
    if job.status == "COMPLETED":
        ran = between(job.started_at, job.completed_at)
        return Outcome("completed", "completed", " at", job.completed_at,
                       _notes(attempt, ran and f"ran {ran}"))
    if job.status == "DEAD_LETTER":
        return Outcome("dead", "dead-lettered", " at", job.completed_at, _notes(f"after {attempt}"))
    if job.status == "FAILED":
        # FAILED is what a cancel writes (queue_core/features/cancel.py); one without a
        # canceller came from outside skiplock and is called what it is.
        what = f"cancelled by {job.cancelled_by}" if job.cancelled_by else "failed"
        return Outcome("cancelled", what, " at", job.completed_at,
                       _notes(f"{job.attempts} of {job.max_attempts} attempts made"))
    if job.status == "PROCESSING":
        where = (f"worker {worker.slot} (pid {worker.pid} on {worker.host})" if worker
                 else f"{job.locked_by or 'an unknown worker'}")
        return Outcome("running", f"running on {where}", " since", job.started_at,
                       _notes(attempt, _progress(job),
                              job.cancel_requested_at and
                              f"cancel asked by {job.cancelled_by or 'unknown'} "
                              f"{ago(job.cancel_requested_at, now)}: it stops within a heartbeat"))
    # PENDING
    later = job.available_at is not None and job.available_at > now
    when = " at" if later else ", ready since"
    snoozed = f"snoozed {job.snoozes} times" if job.snoozes else None
    if job.held_back:
        return Outcome("held", f"held back by concurrency key {job.concurrency_key}", when,
                       job.available_at,
                       _notes(f"at most {job.concurrency_limit} of its key run at once", snoozed))
    fair_key = (others or {}).get("fairKey")
    if job.held_back is False and fair_key and not (others or {}).get("waitingFor"):
        # Waiting its turn (queue_core/features/fairness.py): its key's window is full.
        return Outcome("held", f"waiting its turn behind the other jobs of fair key {fair_key}",
                       when, job.available_at, _notes(snoozed))
    if job.last_error is not None:
        failed = f"attempt {job.attempts} of {job.max_attempts} failed" if job.attempts else None
        return Outcome("retrying", "retrying", when, job.available_at, _notes(failed, snoozed))
    if later:
        return Outcome("scheduled", "scheduled", " for", job.available_at, _notes(snoozed))
    return Outcome("ready", "waiting for a worker", " since", job.available_at, _notes(snoozed))


def _progress(job: Job) -> str | None:
    if job.progress is None and not job.progress_message:
        return None
    done = f"{job.progress * 100:.0f} % done" if job.progress is not None else "progress"
    return f"{done}: {job.progress_message}" if job.progress_message else done


def _notes(*notes: str | None | datetime) -> tuple[str, ...]:
    return tuple(n for n in notes if isinstance(n, str) and n)


def timing(job: Job, now: datetime) -> tuple[list[Timing], list[Field]]:
    """The four times of the row, and the durations between them that are known."""
    times = [Timing(label, at, ago(at, now) if at else "")
             for label, at in (("created", job.created_at), ("available", job.available_at),
                               ("started", job.started_at), ("finished", job.completed_at))]
    running = job.status == "PROCESSING"
    durations = [
        ("waited to start", between(job.available_at, job.started_at)),
        ("running for" if running else "ran",
         between(job.started_at, now if running else job.completed_at)),
        ("created to finished", between(job.created_at, job.completed_at)),
    ]
    return times, [Field(label, value) for label, value in durations if value]


# Columns the page reads through `Job` (sql.GET_JOB); the others of the row come
# as JSON (ops/sql.py JOB_OTHER_COLUMNS), those named here by a label of their own.
# The checkpoint is read through `Job`, decoded per job: another client may have
# written one that the driver's decoding of the row as JSON would raise on.
SHOWN_COLUMNS = frozenset({
    "id", "type", "payload", "status", "priority", "availableAt", "attempts", "maxAttempts",
    "lastError", "lockedAt", "lockedBy", "idempotencyKey", "userId", "createdAt", "startedAt",
    "completedAt", "result", "interruptions", "cancelRequestedAt", "cancelledBy",
    "concurrencyKey", "concurrencyLimit", "heldBack", "uniqueKey", "uniqueUntil", "progress",
    "progressMessage", "snoozes", "checkpoint",
})
_LABELLED_OTHERS = {"notifyDone"}


def details(job: Job, worker: Any | None, others: dict[str, Any], now: datetime) -> list[Field]:
    """The remaining fields, each labelled: always the few every job has, the
    others only when set (an empty column of a feature the job does not use says
    nothing), then `others` (the row's remaining columns as JSON: a later
    migration's) under their own names."""
    fields = [
        Field("priority", str(job.priority)),
        Field("idempotency key", job.idempotency_key or "-", code=bool(job.idempotency_key)),
        Field("user", job.user_id or "-",
              href="/jobs?" + urlencode({"user": job.user_id}) if job.user_id else None),
    ]
    if job.locked_by:
        held = f"{job.locked_by}, lease renewed {ago(job.locked_at, now)}"
        if worker:
            held += (f"; worker {worker.slot}, pid {worker.pid} on {worker.host} "
                     f"(master pid {worker.master_pid}, {worker.master_state})")
        fields.append(Field("held by", held))
    optional: list[tuple[str, Any]] = [
        ("interruptions", job.interruptions and
         f"{job.interruptions} (runs cut short by something else than the job)"),
        ("snoozes", job.snoozes),
        ("progress", _progress(job)),
        ("checkpoint", job.checkpoint is not None and pretty(job.checkpoint)),
        ("unique key", job.unique_key),
        ("unique until", job.unique_until and f"{ts(job.unique_until)} ({ago(job.unique_until, now)})"),
        ("concurrency key", job.concurrency_key),
        ("concurrency limit", job.concurrency_limit),
        ("held back", job.held_back and "yes: it waits for a slot of its concurrency key"),
        ("cancel asked", job.cancel_requested_at and
         f"{ts(job.cancel_requested_at)} by {job.cancelled_by or 'unknown'}"),
        ("waited on", others.get("notifyDone") and "yes: a caller waits for its end"),
    ]
    fields += [Field(label, str(value), code=label.endswith("key"))
               for label, value in optional if value not in (None, "", 0, False)]
    for column, value in sorted(others.items()):
        if column not in _LABELLED_OTHERS and value is not None:
            fields.append(Field(column, value if isinstance(value, str) else pretty(value)))
    return fields
