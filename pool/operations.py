"""The observers an operator's settings ask for: process table, metrics, schedules.

`skiplock worker` passes `build_observers(settings)` to `pool.run`; an
embedding program can do the same. A bad schedule file fails here, before
the pool starts, with the reason.
"""

from __future__ import annotations

from pool.observer import PoolObserver
from queue_core.config import Settings


def build_observers(settings: Settings) -> list[PoolObserver]:
    from pool.metrics import MetricsObserver
    from pool.registry import ProcessRegistry
    from pool.scheduler import ScheduleObserver
    from queue_core import schedules

    observers: list[PoolObserver] = [
        ProcessRegistry(settings.heartbeat_s, settings.effective_stuck_timeout_s),
        ScheduleObserver(schedules.load(settings.schedule_file)),
    ]
    if settings.metrics_port is not None:
        metrics = MetricsObserver(settings.metrics_port, settings.metrics_host)
        metrics.serve()
        observers.append(metrics)
    return observers
