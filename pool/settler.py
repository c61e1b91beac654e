"""A child's fenced changes of its jobs outside a job's transaction, and the word
to its master about how each job ended.

Every change here is fenced by holder and attempt (queue_core/lifecycle.py), so
a job rescued elsewhere meanwhile comes back LOST and is left alone. A database
outage never ends a child: a change waits it out with the outage's back-off
(pool/outage.py), while the master keeps the job's lease. Only the master's
death ends the wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from skiplock.pool import lifeline, protocol
from skiplock.pool.group_commit import Outcome
from skiplock.pool.outage import Outage
from skiplock.pool.outcomes import JobOutcome, after_change, after_failure, after_release
from skiplock.queue_core import Job
from skiplock.queue_core.database import faults
from skiplock.queue_core.database.bounds import bounded
from skiplock.queue_core.jobs import Fenced
from skiplock.queue_core.lifecycle import fail, interrupt, release
from skiplock.queue_core.storable import log_reason

log = logging.getLogger("skiplock.worker")

# The child's own statements on the queue (a claim, a settlement outside a job's
# transaction) give up after this, so that a hung server cannot hold a child
# past its master's TERM; a handler's statements are not limited.
STATEMENT_BOUND_S = 5.0


class Settler:
    def __init__(self, worker_id: str, outage: Outage, master_pid: int,
                 wait: Callable[[float], None]) -> None:
        self.worker_id = worker_id
        self.outage = outage
        self.master_pid = master_pid
        self.wait = wait
        # Why a job settled here failed, until its outcome is announced.
        self.reasons: dict[str, str] = {}

    def settle(self, change: Callable[[], JobOutcome]) -> JobOutcome:
        """Run a fenced state change, waiting out a database outage."""
        while True:
            if self.outage.ready():
                try:
                    with bounded(STATEMENT_BOUND_S):
                        outcome = change()
                except Exception as exc:
                    if faults.classify(exc) is None:
                        raise
                    self.outage.failed(exc)
                else:
                    self.outage.succeeded()
                    return outcome
            if not lifeline.parent_alive(self.master_pid):
                raise BrokenPipeError("master is gone")
            self.wait(self.outage.retry_at - time.monotonic())

    def fail(self, job: Fenced, error: str, *, retry: bool,
             checkpoint: str | None = None) -> JobOutcome:
        """An attempt that counts (retried after its backoff, or dead-lettered), with the
        run's latest `checkpoint` (JSON text; None keeps the row's)."""
        self.reasons[job.id] = error
        return self.settle(lambda: after_failure(fail(job, error, retry=retry,
                                                      checkpoint=checkpoint)))

    def interrupted(self, job: Job, reason: str, checkpoint: str | None = None) -> JobOutcome:
        """A run cut short by the database or the pool, not by the job: free the first
        few times (queue_core/accounting.py), so even a job that always meets one ends.
        `checkpoint` as `fail`'s."""
        log.warning("job %s %s interrupted: %s", job.type, job.id, log_reason(reason),
                    extra={"job_id": job.id, "job_type": job.type})
        self.reasons[job.id] = reason
        return self.settle(lambda: after_change(interrupt(job, reason, checkpoint=checkpoint)))

    def release(self, job: Fenced, reason: str) -> JobOutcome:
        """Back to the queue uncharged: the job never started."""
        return self.settle(lambda: after_release(release(job, reason)))

    def announce(self, outcomes: list[Outcome]) -> list[protocol.Message]:
        """Log how these jobs ended (committed), and the master's `finished` for each."""
        messages: list[protocol.Message] = []
        for o in outcomes:
            outcome = o.outcome or JobOutcome.LOST
            messages.append(protocol.Finished(o.job.id, outcome, o.duration_s, o.job.type))
            # Why it failed, from the job's own outcome or from the settlement that
            # wrote its lastError: every failure line says it.
            reason = (self.reasons.pop(o.job.id, None) if self.reasons else None) or o.error
            failed = outcome.failed
            if failed or log.isEnabledFor(logging.INFO):  # nothing formatted when it is off
                log.log(logging.WARNING if failed else logging.INFO,
                        "job %s %s %s in %.0f ms%s", o.job.type, o.job.id, outcome.word,
                        o.duration_s * 1000,
                        f": {log_reason(reason)}" if reason is not None and (
                            failed or outcome is JobOutcome.RELEASED) else "",
                        extra={**job_extra(o.job, self.worker_id), "outcome": str(outcome),
                               "duration_ms": round(o.duration_s * 1000, 1)})
        return messages


def job_extra(job: Job, worker_id: str) -> dict[str, Any]:
    return {"job_id": job.id, "job_type": job.type, "attempt": job.attempts,
            "worker": worker_id}
