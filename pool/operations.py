"""The observers an operator's settings ask for: process table, metrics, schedules.

`skiplock worker` passes `build_observers(settings)` to `pool.run`; an
embedding program can do the same. A bad schedule file fails here, before
the pool starts, with the reason.
"""

from __future__ import annotations

from skiplock.pool.observer import PoolObserver
from skiplock.queue_core.config import Settings


def build_observers(settings: Settings) -> list[PoolObserver]:
    from skiplock.ops import schedules
    from skiplock.pool.metrics import MetricsObserver
    from skiplock.pool.process_table import ProcessTableWriter
    from skiplock.pool.scheduler import ScheduleObserver

    observers: list[PoolObserver] = [
        ProcessTableWriter(settings.heartbeat_s, settings.effective_stuck_timeout_s),
        ScheduleObserver(schedules.load(settings.schedule_file)),
    ]
    if settings.metrics_port is not None:
        metrics = MetricsObserver(settings.metrics_port, settings.metrics_host,
                                  live_s=settings.effective_stuck_timeout_s)
        metrics.serve()
        observers.append(metrics)
    return observers
