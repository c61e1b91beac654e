"""The schedule runner: every master enqueues the due occurrences of every schedule.

An observer of the master (no change to its loop): at start it catches up on
what was missed while no master ran, then it looks again every
CHECK_INTERVAL_S. Several masters, on one host or many, enqueue each
occurrence once (the occurrence's idempotency key decides, see
`skiplock.ops.schedules`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from skiplock.ops import schedules
from skiplock.pool.observer import NullObserver, PoolSnapshot
from skiplock.pool.outage import Outage

log = logging.getLogger("skiplock.scheduler")

CHECK_INTERVAL_S = 10.0


class ScheduleObserver(NullObserver):
    def __init__(self, entries: Sequence[schedules.Schedule],
                 check_interval_s: float = CHECK_INTERVAL_S) -> None:
        self.schedules = list(entries)
        self.check_interval_s = check_interval_s
        self._next_check = 0.0
        self._faults = Outage("running the schedules", log)

    def on_start(self, snapshot: PoolSnapshot) -> None:
        if self.schedules:
            log.info("running %d schedules: %s", len(self.schedules),
                     ", ".join(s.name for s in self.schedules))
        self.warn_unserved(snapshot.served)
        self.check()

    def warn_unserved(self, served: frozenset[str] | None) -> None:
        """Every master runs every schedule, also those whose type another deployment
        serves: legitimate, but a type that no pool serves anywhere waits for good."""
        if served is None:
            return
        for s in self.schedules:
            if s.job_type not in served:
                log.warning("schedule %s enqueues %s, which no handler of this pool serves: "
                            "its jobs wait (PENDING) for a pool that serves %s", s.name,
                            s.job_type, s.job_type,
                            extra={"schedule": s.name, "job_type": s.job_type})

    def on_tick(self, snapshot: PoolSnapshot) -> None:
        if snapshot.state == "running" and time.monotonic() >= self._next_check:
            self.check()

    def check(self) -> None:
        self._next_check = time.monotonic() + self.check_interval_s
        if not self.schedules:
            return
        self._faults.run(lambda: schedules.run_due(self.schedules))
