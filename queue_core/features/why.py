"""Why a pending job is not claimable: each reason a SQL predicate over the job's row and
the sentence that explains it, in one list.

    skiplock job ID        # "waiting: for a slot of key DETECT_PATTERNS:u1 (1 of 1 taken)"
    skiplock stats         # "held: 812 waiting for a slot, 3 parked, ..."

`sql.HELD_REASONS` is the one place: `skiplock job`, the dashboard's job page
and the stats section all read it. A feature that holds jobs for a reason of
its own adds one `Reason` there: a short name (the stats key), a label, a
predicate over the row aliased `j` (true when the job waits for that reason),
and a SQL text expression over `j` that says it, with the figures a person
needs to act.
The predicates read the row and, for figures, a probe by primary key; they
must not depend on each other's order: a job may wait for several reasons at
once (a paused type's job that is not due yet), and `explain` gives them all.
"""

from __future__ import annotations

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import Joinable, connect


def explain(job_id: str, conn: Joinable | None = None) -> list[str]:
    """Why the pending job `job_id` is not claimable now, in sentences; [] when it is
    (or when it is not pending)."""
    with connect(conn) as c:
        found = c.execute(sql.WHY_PENDING, {"id": job_id}).first()
    return [] if found is None else [s for s in found[0] if s is not None]


def count_held(conn: Joinable | None = None) -> dict[str, int]:
    """Pending jobs not claimable now, by reason (a job may count under several)."""
    with connect(conn) as c:
        found = c.execute(sql.COUNT_HELD_BY_REASON).first()
    return {r.name: int(getattr(found, r.name)) for r in sql.HELD_REASONS}


def labels() -> dict[str, str]:
    return {r.name: r.label for r in sql.HELD_REASONS}
