"""What the master owes the database about the jobs of a child that is gone.

When a child dies or is stopped, the master decides what each of its jobs
becomes (`for_running`, `for_the_rest`) and writes it in its turn's bounded
database work (`Owed.settle`), never straight from the reap, where nothing
bounds how long the database may take:

- the job it was running: a crash or a timeout is an attempt, with a
  `lastError` that names the signal (docs/lessons.md); a stop by the pool or a
  fence is an interruption, free the first few times (queue_core/accounting.py),
  so a job that hangs through every restart still ends. Either way the last
  checkpoint the child reported is written in the same fenced statement, so a
  checkpoint the master heard but had not yet written with a heartbeat is not
  lost (the master reads what is left in the child's pipes when it reaps it);
- the jobs it ran that waited for their group's commit: they started, so an
  interruption, never "never started", which would let a child that keeps
  dying run them without end;
- every other job its worker id holds: claimed and never started (some the
  master never heard of), given back uncharged by one `release_unstarted`.

A settlement that meets a row another session has locked waits for the next
try (`BUSY_RETRY_S`) without holding up the others.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
from sqlalchemy.exc import SQLAlchemyError

from skiplock.pool.children import WorkerChild
from skiplock.pool.heartbeats import BUSY_RETRY_S
from skiplock.pool.observer import ChildInfo
from skiplock.pool.outcomes import (
    JobOutcome,
    SettleAction,
    after_change,
    after_failure,
    after_release,
)
from skiplock.pool.postmortem import EXIT_ABORTED, died_while_running, timed_out
from skiplock.pool.states import Cause
from skiplock.queue_core import fail, release
from skiplock.queue_core.database import faults
from skiplock.queue_core.errors import DatabaseUnavailable
from skiplock.queue_core.jobs import JobRef
from skiplock.queue_core.lifecycle import interrupt, release_unstarted
from skiplock.queue_core.storable import log_reason

log = logging.getLogger("skiplock.master")

# What the database may throw at the master: an outage to ride out, never a reason
# to stop the pool (its children keep their jobs meanwhile).
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, psycopg2.Error)


@dataclass(frozen=True)
class Settlement:
    """A job the master owes the database a word about (its child is gone)."""

    child: ChildInfo
    ref: JobRef
    job_type: str
    action: SettleAction
    error: str
    started: bool
    duration_s: float
    # RELEASE_UNSTARTED: the jobs it must not give back, besides ref.id: they
    # started (and are settled on their own).
    keep: tuple[str, ...] = ()
    # The job's last `skiplock.checkpoint` the child reported (JSON text), written
    # with a FAIL or an INTERRUPT; None keeps the row's.
    checkpoint: str | None = None


def for_running(child: WorkerChild, status: int, cause: Cause,
                duration_s: float) -> Settlement:
    """The settlement of the job `child` was running when it ended with `status`."""
    job = child.job
    assert job is not None
    ref = job.ref
    action: SettleAction
    if cause == Cause.KILLED_TIMEOUT:
        action = SettleAction.FAIL
        error = timed_out(child.pid, job.timeout_s or 0.0, ref.attempts, job.max_attempts)
    elif cause == Cause.FENCED:
        # Stopped before its lease could run out, so that no other host runs it
        # while it still runs here: cut short by the database, not by the job.
        action = SettleAction.INTERRUPT
        error = (f"worker pid {child.pid} was stopped because its lease could not be "
                 f"renewed ({child.fenced_because or 'database unreachable'})")
    elif cause == Cause.STOPPED and (child.killed or _exit_code(status) == EXIT_ABORTED):
        # Stopped by us before the job could end (a deploy, say).
        action = SettleAction.INTERRUPT
        error = (f"worker pid {child.pid} was stopped by the pool (shutdown, reload or "
                 f"fewer workers) before the job finished")
    else:
        action = SettleAction.FAIL
        error = died_while_running(child.pid, status, ref.attempts, job.max_attempts)
    return Settlement(child.info(), ref, job.type, action, error, True, duration_s,
                      checkpoint=child.checkpoints.get(ref.id))


def for_the_rest(child: WorkerChild, how: str, running: str) -> list[Settlement]:
    """The settlements of the jobs of `child` other than the one it was running."""
    owed = [Settlement(child.info(), ref, job_type, SettleAction.INTERRUPT,
                       f"worker pid {child.pid} {how} after the job ran, before its "
                       "completion committed", started=True, duration_s=0.0,
                       checkpoint=child.checkpoints.get(ref.id))
            for ref, job_type in child.ran.values()]
    if child.booted:  # claimed in a batch, or in the window before the child said so
        owed.append(Settlement(child.info(), JobRef(running, child.worker_id, 0), "?",
                               SettleAction.RELEASE_UNSTARTED,
                               f"worker pid {child.pid} {how} before it started the job",
                               started=False, duration_s=0.0, keep=tuple(child.ran)))
    return owed


class Owed:
    """The settlements the master still owes, in order."""

    def __init__(self, clock: Callable[[], float], answered: Callable[[float], None],
                 failed: Callable[[BaseException], None],
                 notify: Callable[..., None]) -> None:
        self.clock = clock
        self.answered = answered  # the database answered a statement begun then
        self.failed = failed  # it did not: the master's outage handling
        self.notify = notify
        self.pending: collections.deque[Settlement] = collections.deque()
        self.settle_at = 0.0  # a settlement met a locked row: not before this

    def __bool__(self) -> bool:
        return bool(self.pending)

    def __len__(self) -> int:
        return len(self.pending)

    def owe(self, settlement: Settlement) -> None:
        self.pending.append(settlement)

    def held_up(self, now: float) -> bool:
        """Whether a row lock holds the settlements back until `settle_at`."""
        return bool(self.pending) and now < self.settle_at

    def describe(self) -> str:
        return ", ".join(s.ref.id or f"unstarted jobs of {s.ref.locked_by}"
                         for s in self.pending)

    def settle(self) -> bool:
        """Settle owed jobs in order; False if the database stopped us."""
        blocked: list[Settlement] = []
        try:
            return self._settle(blocked)
        finally:
            if blocked:
                self.pending.extend(blocked)
                self.settle_at = self.clock() + BUSY_RETRY_S

    def _settle(self, blocked: list[Settlement]) -> bool:
        while self.pending:
            item = self.pending[0]
            began = self.clock()
            try:
                outcome = self._write(item)
            except DB_ERRORS as exc:
                if faults.classify(exc) == faults.Fault.LOCK_TIMEOUT:
                    # Another session holds this job's row: that says nothing about the
                    # database, and must not hold up the others. Tried again next turn.
                    blocked.append(self.pending.popleft())
                    continue
                self.failed(exc)
                return False
            self.answered(began)
            self.pending.popleft()
            if outcome is not None:
                self._report(item, outcome)
        return True

    def _write(self, item: Settlement) -> JobOutcome | None:
        if item.action is SettleAction.FAIL:
            return after_failure(fail(item.ref, item.error, retry=True,
                                      checkpoint=item.checkpoint))
        if item.action is SettleAction.INTERRUPT:
            return after_change(interrupt(item.ref, item.error, checkpoint=item.checkpoint))
        if item.action is SettleAction.RELEASE:
            return after_release(release(item.ref, item.error))
        assert item.ref.locked_by is not None
        keep = ([item.ref.id] if item.ref.id else []) + list(item.keep)
        freed = release_unstarted(item.ref.locked_by, keep, item.error)
        if freed:
            log.info("released %d job(s) that %s claimed and never started: %s",
                     len(freed), item.child.worker_id, ", ".join(freed),
                     extra={"worker": item.child.worker_id})
        return None

    def _report(self, item: Settlement, outcome: JobOutcome) -> None:
        extra: dict[str, Any] = {"job_id": item.ref.id, "job_type": item.job_type,
                                 "attempt": item.ref.attempts, "worker": item.child.worker_id}
        if outcome is JobOutcome.LOST:
            log.info("job %s %s was already settled elsewhere (%s)", item.job_type,
                     item.ref.id, log_reason(item.error), extra=extra)
        else:
            level = logging.INFO if outcome is JobOutcome.RELEASED else logging.WARNING
            log.log(level, "job %s %s %s: %s", item.job_type, item.ref.id,
                    outcome.word, log_reason(item.error), extra=extra)
        if item.started:
            self.notify("on_job_finished", item.child, item.ref.id, item.job_type, outcome,
                        item.duration_s)


def _exit_code(status: int) -> int | None:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
