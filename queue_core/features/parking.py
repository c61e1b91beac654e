"""Parking: jobs of a type that no live pool serves leave the claim's index until one does.

A pool claims only the types it serves (pool/served.py). A job of a type
that no running pool serves stays PENDING, and since it is never taken it
becomes the oldest job of the queue: the front of "WorkerJob_claim_idx",
which every claim with a type filter walks over, at a cost that grows with
their number (docs/benchmarks.md, "Figures behind the code").
A master's maintenance parks them (`park_unserved`): "heldBack" = true with no
concurrency key, outside the claim's index; and every master puts back the
parked jobs of the types it serves (`unpark`), at its start and then every
heartbeat interval, through "WorkerJob_parked_idx". Migration 0012_routing
says why this shape, docs/internals.md what it costs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.queue_core import sql
from skiplock.queue_core.database.arrays import text_array
from skiplock.queue_core.database.db import connect

log = logging.getLogger("skiplock.routing")

# Rows of the claim's order looked at by one parking pass, and rows put back by
# one unparking pass: each pass is one short statement (a few ms), well within a
# master's budget for a turn; a pass that found a full batch is followed by
# another at the master's next turn.
PARK_WINDOW = 1000
UNPARK_BATCH = 2000


def park_unserved(served: Collection[str], *, live_s: float, grace_s: float,
                  window: int = PARK_WINDOW,
                  conn: Connection | Session | None = None) -> Counter[str]:
    """Park the jobs among the first `window` of the claim's order whose type neither
    `served` nor any master seen in the process table within `live_s` serves, and
    that have been due for `grace_s`. Returns how many were parked, by type."""
    with connect(conn, autocommit=True) as c:
        rows = c.execute(sql.PARK_UNSERVED, {
            "served": text_array(sorted(served)), "live_s": float(live_s),
            "grace_s": float(grace_s), "window": window}).fetchall()
    parked = Counter(row.type for row in rows)
    if parked:
        log.warning("parked %d job(s) that no running pool serves, until one does: %s",
                    sum(parked.values()), _by_type(parked),
                    extra={"parked": sum(parked.values())})
    return parked


def unpark(served: Collection[str], *, batch: int = UNPARK_BATCH,
           conn: Connection | Session | None = None) -> Counter[str]:
    """Put parked jobs of the `served` types back in the claim's index (at most
    `batch`), waking idle workers. Returns how many, by type."""
    if not served:
        return Counter()
    with connect(conn, autocommit=True) as c:
        rows = c.execute(sql.UNPARK, {"served": text_array(sorted(served)),
                                      "batch": batch}).fetchall()
        if rows:  # after the jobs are back: a child woken now finds them
            c.execute(sql.WAKE_ALONE)
    back = Counter(row.type for row in rows)
    if back:
        log.info("put back %d parked job(s) of types this pool serves: %s",
                 sum(back.values()), _by_type(back), extra={"unparked": sum(back.values())})
    return back


def parked_by_type(conn: Connection | Session | None = None) -> dict[str, int]:
    """Parked jobs by type, through "WorkerJob_parked_idx"."""
    with connect(conn) as c:
        return {row.type: int(row.n) for row in c.execute(sql.PARKED_BY_TYPE)}


def _by_type(counts: Counter[str]) -> str:
    return ", ".join(f"{t} ({n})" for t, n in sorted(counts.items()))
