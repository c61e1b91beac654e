"""The master's side of a cancel: end the job, then stop the child that runs it.

The heartbeat's answer names the held jobs an operator asked to cancel
(queue_core/features/cancel.py). For each, the master first ends the job FAILED in a
fenced statement, so the outcome is settled whatever the child does next: a
completion racing it finds the job no longer its own and rolls back. Then:

- the job is running: the child gets SIGQUIT (its handler gets `Abandon`, the
  job's transaction rolls back), SIGKILL after a short grace; its slot is
  refilled like that of a child stopped for a timeout;
- the job ran and its outcome waits for its group's commit: it ends "after it
  ran, before its commit", and the commit keeps the others (pool/group_commit.py);
- the job is claimed in the child's batch but not started: the master stops
  heartbeating it and treats it as lost, so the child is killed if it starts
  it (its completion could not commit anyway).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable

from skiplock.pool.children import WorkerChild
from skiplock.pool.states import Cause
from skiplock.queue_core.features.cancel import end_cancelled

log = logging.getLogger("skiplock.master")

def stop_cancelled(children: Iterable[WorkerChild], job_ids: Iterable[str], grace_s: float,
                   now: float) -> None:
    """Settle and stop every held job in `job_ids`; raises the database's errors (the
    caller rides out the outage, and the next heartbeat asks again)."""
    job_ids = set(job_ids)
    if not job_ids:
        return
    for child in children:
        for job_id in [i for i in child.held if i in job_ids]:
            ref = child.held[job_id]
            running = child.job is not None and child.job.ref.id == job_id
            ran = job_id in child.ran
            ended = end_cancelled(ref, started=running, ran=ran)
            extra = {"job_id": job_id, "worker": ref.locked_by}
            if running and ended:
                assert child.job is not None
                log.warning("job %s %s cancelled; stopping %s", child.job.type, job_id,
                            child.label(), extra={**extra, "job_type": child.job.type})
                # A child already being stopped keeps its first cause, and is hurried.
                child.stop(signal.SIGQUIT, grace_s, Cause.CANCELLED, now)
                # Ended: no more heartbeats for it (one would find it gone and take
                # the child for one that lost its job).
                child.held.pop(job_id, None)
            elif ran and ended:
                # Its outcome waits for its group's commit: that commit finds it
                # cancelled and commits the others (pool/group_commit.py).
                log.info("job %s cancelled after %s ran it, before its commit", job_id,
                         child.label(), extra=extra)
                child.held.pop(job_id, None)
                child.ran.pop(job_id, None)
            elif not running and not ran:
                log.info("job %s cancelled before %s started it", job_id, child.label(),
                         extra=extra)
                child.held.pop(job_id, None)
                child.lost.add(job_id)
            elif not ended:  # finished meanwhile: its own outcome stands
                log.info("job %s was cancelled as it ended; its outcome stands", job_id,
                         extra=extra)
