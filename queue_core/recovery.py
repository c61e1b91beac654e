"""Stuck recovery: the second safety net, for workers and hosts that died.

A pool settles the job of a child that died at once (it sees the death). What
no pool sees is a whole host, or a master, that died: its jobs stay PROCESSING
and their heartbeats stop. `recover_stuck` rescues every job whose heartbeat
is older than the stuck timeout, in batches, each batch one statement. The
lost run is an interruption (`accounting.py`): free for the first few of a
job, then charged, so a job with attempts left goes back to PENDING after a
back-off, one without goes to DEAD_LETTER, and `lastError` says which worker
stopped, when, and whether the attempt was counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from skiplock.queue_core import accounting, backoff, sql
from skiplock.queue_core.database.db import Joinable, connect
from skiplock.queue_core.storable import log_reason

log = logging.getLogger("skiplock.recovery")

BATCH_SIZE = 1000


@dataclass
class Recovered:
    retried: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    # Every lease older than this (the server's clock) was looked at: where the next
    # window may start (pool/recovery.py).
    looked_before: datetime | None = None

    @property
    def count(self) -> int:
        return len(self.retried) + len(self.dead)

    def __bool__(self) -> bool:
        return self.count > 0


def recover_stuck(stuck_timeout_s: float, batch_size: int = BATCH_SIZE,
                  conn: Joinable | None = None, since: datetime | None = None) -> Recovered:
    """Rescue jobs whose last heartbeat is older than `stuck_timeout_s` seconds; with
    `since`, only those whose last heartbeat came at `since` or later (a window, see
    `sql.RECOVER_STUCK`)."""
    if stuck_timeout_s <= 0:
        raise ValueError("stuck_timeout_s must be positive")
    recovered = Recovered()
    with connect(conn, autocommit=True) as c:
        [(recovered.looked_before,)] = c.execute(
            sql.STUCK_BEFORE, {"timeout_s": float(stuck_timeout_s)}).fetchall()
    while True:
        with connect(conn, autocommit=True) as c:
            rows = c.execute(sql.RECOVER_STUCK, {
                "since": "-infinity" if since is None else since,
                "timeout_s": float(stuck_timeout_s), "batch": batch_size,
                "free": accounting.FREE_INTERRUPTIONS,
                "free_backoff_s": accounting.interruption_backoff_base_s(),
                "backoff_base_s": backoff.BASE_S, "backoff_cap_s": backoff.CAP_S,
            }).fetchall()
        for row in rows:
            if str(row.status) == "PENDING":
                recovered.retried.append(row.id)
                continue
            recovered.dead.append(row.id)  # few: each gets its line, with its reason
            log.warning("job %s %s dead-lettered: %s", row.type, row.id,
                        log_reason(row.lastError),
                        extra={"job_id": row.id, "job_type": row.type})
        if len(rows) < batch_size:
            break
    if recovered:
        log.warning("recovered %d stuck jobs (%d to retry, %d dead-lettered): their workers "
                    "sent no heartbeat for more than the stuck timeout of %g s",
                    recovered.count, len(recovered.retried), len(recovered.dead),
                    stuck_timeout_s)
    return recovered
