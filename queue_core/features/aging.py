"""Priority aging: a job that has waited long enough is raised, step by step, to a bound.

The claim takes the highest priority first, so a steady stream of urgent jobs
can keep a low-priority one waiting for ever. With aging on (`skiplock worker
--age-after 5m`), pool masters raise, in their maintenance, the priority of
every claimable job that has been due for `--age-after` by `--age-step`, and
again after each further `--age-after`, up to `--age-max` (without it: the
highest priority among the jobs due now). A raised job sits higher in the
claim's own index: the claim does not change and computes nothing per row.
Among jobs of the same priority the claim takes the one due first, so a job
that reached the bound runs before every job of that priority that came due
after it.

The bound: a job of priority p that came due at t is at the bound b by
t + `age_after` x ceil((b - p) / `age_step`) + one maintenance pass, and then
waits only for the jobs of priority b that were due before it (and for any
above b, which only `--age-max` allows).

"agedFrom" keeps the priority the job was enqueued with; "agedAt" is its last
raise. Held-back jobs (a concurrency slot, parked, waiting for parents) are not
raised while they are held: they are not waiting for the claim. A retried job
keeps the priority it reached. Off by default: docs/jobs.md says why.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.errors import InvalidJob

log = logging.getLogger("skiplock.aging")

# Rows one pass raises: one short statement; a full pass is followed by another
# at the master's next turn.
AGE_BATCH = 1000
_INT32 = 2**31 - 1


def age(after_s: float, *, step: int = 1, max_priority: int | None = None,
        batch: int = AGE_BATCH, conn: Connection | Session | None = None) -> Counter[str]:
    """One pass: raise by `step`, up to `max_priority` (None: the highest priority among
    the jobs due now), the oldest `batch` claimable jobs due for `after_s` seconds
    since they came due or were last raised. Returns how many, by type."""
    if not after_s > 0 or step < 1 or batch < 1:
        raise InvalidJob("aging needs a wait above 0 seconds, a step and a batch of at least 1")
    if max_priority is not None and abs(max_priority) > _INT32 - step:
        raise InvalidJob(f"the bound of aging must be an integer within ±{_INT32 - step}")
    with connect(conn, autocommit=True) as c:
        rows = c.execute(sql.AGE_JOBS, {"after_s": float(after_s), "step": step,
                                        "max": max_priority, "batch": batch}).fetchall()
    raised = Counter(row.type for row in rows)
    if raised:
        log.info("raised the priority of %d job(s) waiting for %gs or more", len(rows), after_s,
                 extra={"aged": len(rows)})
    return raised


# Not a reason to wait but what changed a waiting job's place: aging raised it.
AGED = """status = 'PENDING' AND "agedFrom" IS NOT NULL"""


def reason(priority: int, aged_from: int, aged_at: Any) -> str:
    """The sentence for a job that AGED matches."""
    return (f"priority raised from {aged_from} to {priority} by priority aging (last at "
            f"{aged_at}) after waiting past --age-after")


def aged_by_type(conn: Connection | Session | None = None) -> dict[str, tuple[int, int]]:
    """Pending jobs that aging raised, by type: (how many, the most any was raised)."""
    with connect(conn) as c:
        return {row.type: (int(row.n), int(row.most_raised))
                for row in c.execute(sql.AGED_BY_TYPE)}
