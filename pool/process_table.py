"""The process table's writer: each master keeps its row and its children's fresh.

An observer of the master. On every heartbeat interval it writes, in one
transaction, its own row and the rows of its children with the job each one
runs (`skiplock ps` reads them); at start, and now and then after, it prunes
masters whose heartbeat is older than the stuck timeout (a host that died, a
master that was SIGKILLed), their children going with them. On a clean stop
it deletes its rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from skiplock.ops import processes
from skiplock.pool.observer import NullObserver, PoolSnapshot
from skiplock.pool.outage import Outage

log = logging.getLogger("skiplock.process_table")

PRUNE_EVERY_BEATS = 6


class ProcessTableWriter(NullObserver):
    def __init__(self, heartbeat_s: float, stale_after_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._next_beat = 0.0
        self._beats = 0
        self._faults = Outage("updating the process table", log)

    def on_start(self, snapshot: PoolSnapshot) -> None:
        self._guarded(lambda: processes.prune(self.stale_after_s))
        self._beat(snapshot)

    def on_tick(self, snapshot: PoolSnapshot) -> None:
        if time.monotonic() >= self._next_beat:
            self._beat(snapshot)

    def on_stop(self, snapshot: PoolSnapshot) -> None:
        self._guarded(lambda: processes.deregister(snapshot.master_id))

    def _beat(self, snapshot: PoolSnapshot) -> None:
        self._next_beat = time.monotonic() + self.heartbeat_s
        children = [
            processes.ChildRow(id=c.worker_id, pid=c.pid, slot=c.index, started_at=c.started_at,
                               job_id=c.job_id, job_type=c.job_type,
                               job_started_at=c.job_started_at)
            for c in snapshot.children
        ]
        self._guarded(lambda: processes.beat(
            snapshot.master_id, host=snapshot.host, pid=snapshot.pid,
            started_at=snapshot.started_at, state=snapshot.state,
            concurrency=snapshot.concurrency, children=children, served=snapshot.served))
        self._beats += 1
        if self._beats % PRUNE_EVERY_BEATS == 0:
            self._guarded(lambda: processes.prune(self.stale_after_s))

    def _guarded(self, action: Callable[[], object]) -> None:
        self._faults.run(action)
