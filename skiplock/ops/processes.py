"""The process table behind `skiplock ps`: live masters and their children.

Every master writes its own row and its children's rows on its heartbeat
(`pool/process_table.py`), and deletes them when it stops. A master
that stops heartbeating (its host died, it was killed) is pruned by any live
master, or by `skiplock recover`, once its heartbeat is older than the stuck
timeout; its children go with it (ON DELETE CASCADE).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.ops import sql as ops_sql
from skiplock.queue_core import sql
from skiplock.queue_core.database.arrays import text_array
from skiplock.queue_core.database.db import connect

log = logging.getLogger("skiplock.processes")


@dataclass(frozen=True)
class ChildRow:
    id: str  # the child's worker id (its lockedBy)
    pid: int
    slot: int
    started_at: float  # unix time
    job_id: str | None = None
    job_type: str | None = None
    job_started_at: float | None = None


@dataclass(frozen=True)
class ProcessRow:
    id: str
    kind: str
    master_id: str | None
    host: str
    pid: int
    slot: int | None
    state: str | None
    concurrency: int | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    job_id: str | None
    job_type: str | None
    job_started_at: datetime | None
    job_age_s: float | None
    job_progress: float | None = None  # the job's last skiplock.progress, via the heartbeat
    job_progress_message: str | None = None
    # A master's job types (pool/served.py); None for a child, or a master of an
    # older skiplock, which claims every type.
    served: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "kind": self.kind, "masterId": self.master_id, "host": self.host,
            "pid": self.pid, "slot": self.slot, "state": self.state,
            "concurrency": self.concurrency, "startedAt": self.started_at.isoformat(),
            "heartbeatAt": self.heartbeat_at.isoformat(),
            "heartbeatAgeSeconds": round(self.heartbeat_age_s, 3), "jobId": self.job_id,
            "jobType": self.job_type,
            "jobStartedAt": self.job_started_at.isoformat() if self.job_started_at else None,
            "jobProgress": self.job_progress, "jobProgressMessage": self.job_progress_message,
            "served": list(self.served) if self.served is not None else None,
        }


def beat(master_id: str, *, host: str, pid: int, started_at: float, state: str,
         concurrency: int, children: Sequence[ChildRow],
         served: Collection[str] | None = None,
         conn: Connection | Session | None = None) -> None:
    """Refresh this master's row (with the job types it serves) and replace its
    children's rows, in one transaction."""
    with connect(conn) as c:
        c.execute(ops_sql.UPSERT_MASTER, {
            "id": master_id, "host": host, "pid": pid, "state": state,
            "concurrency": concurrency, "started_at": started_at,
            "served": text_array(sorted(served)) if served is not None else None})
        c.execute(ops_sql.SYNC_CHILDREN, {
            "master_id": master_id, "host": host,
            "ids": [ch.id for ch in children], "pids": [ch.pid for ch in children],
            "slots": [ch.slot for ch in children],
            "started": [ch.started_at for ch in children],
            "job_ids": [ch.job_id for ch in children],
            "job_types": [ch.job_type for ch in children],
            "job_started": [ch.job_started_at for ch in children],
        })


def deregister(master_id: str, conn: Connection | Session | None = None) -> None:
    with connect(conn) as c:
        c.execute(ops_sql.DELETE_MASTER, {"id": master_id})


def prune(timeout_s: float, conn: Connection | Session | None = None) -> list[str]:
    """Delete masters (and their children) whose heartbeat is older than `timeout_s`."""
    with connect(conn) as c:
        rows = c.execute(ops_sql.PRUNE_PROCESSES, {"timeout_s": float(timeout_s)}).fetchall()
    for row in rows:
        log.warning("pruned master %s (pid %s on %s): no heartbeat for %.0f s",
                    row.id, row.pid, row.host, timeout_s,
                    extra={"master": row.id, "host": row.host})
    return [row.id for row in rows]


def live_served(live_s: float, conn: Connection | Session | None = None
                ) -> list[frozenset[str] | None]:
    """The served sets of the masters whose heartbeat is younger than `live_s` (None:
    a master of an older skiplock, which claims every type)."""
    with connect(conn) as c:
        return [frozenset(r.served) if r.served is not None else None
                for r in c.execute(sql.LIVE_MASTERS, {"live_s": float(live_s)})]


def list_processes(conn: Connection | Session | None = None) -> list[ProcessRow]:
    with connect(conn) as c:
        rows = c.execute(ops_sql.LIST_PROCESSES).fetchall()
    return [
        ProcessRow(r.id, r.kind, r.masterId, r.host, r.pid, r.slot, r.state, r.concurrency,
                   r.startedAt, r.heartbeatAt, float(r.heartbeat_age_s), r.jobId, r.jobType,
                   r.jobStartedAt, float(r.job_age_s) if r.job_age_s is not None else None,
                   r.job_progress, r.job_progress_message,
                   tuple(r.served) if r.served is not None else None)
        for r in rows
    ]
