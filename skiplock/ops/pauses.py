"""Pausing a job type: its pending jobs stay PENDING and no pool claims them.

The claim (`sql.CLAIM`) skips every type with a row in "WorkerJobPause", so a
pause takes effect on every host at the next claim, and survives restarts.
Jobs already running are left to finish.
"""

from __future__ import annotations

import getpass
import logging
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.ops import sql as ops_sql
from skiplock.queue_core.database.db import connect

log = logging.getLogger("skiplock.pauses")


@dataclass(frozen=True)
class Pause:
    type: str
    paused_at: datetime
    paused_by: str | None
    reason: str | None
    pending: int


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def pause(job_type: str, reason: str | None = None,
          conn: Connection | Session | None = None) -> bool:
    """Pause `job_type`; False if it was already paused."""
    with connect(conn) as c:
        done = c.execute(ops_sql.PAUSE, {"type": job_type, "by": _who(), "reason": reason}).first()
    if done:
        log.info("paused job type %s", job_type, extra={"job_type": job_type})
    return done is not None


def resume(job_type: str, conn: Connection | Session | None = None) -> bool:
    """Resume `job_type`; False if it was not paused."""
    with connect(conn) as c:
        done = c.execute(ops_sql.RESUME, {"type": job_type}).first()
    if done:
        log.info("resumed job type %s", job_type, extra={"job_type": job_type})
    return done is not None


def paused(conn: Connection | Session | None = None) -> list[Pause]:
    with connect(conn) as c:
        rows = c.execute(ops_sql.PAUSED).fetchall()
    return [Pause(r.type, r.pausedAt, r.pausedBy, r.reason, int(r.pending)) for r in rows]
