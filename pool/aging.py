"""The master's share of priority aging: when to run a pass (queue_core/features/aging.py).

With `--age-after` set, a pass runs at the master's first turn, then every
quarter of that wait (between 1 s and a minute), so a job is raised at most a
quarter of a wait late; a pass that raised a full batch is followed by
another a second later, until the backlog is through. Every master runs it:
a row raised by one master is not raised again by another before its next
wait is over (the statement re-checks "agedAt" under the row's lock). A pass
that has become slow runs less often (queue_core/pacing.py).
"""

from __future__ import annotations

import time

from skiplock.queue_core import pacing
from skiplock.queue_core.features import aging

AGAIN_S = 1.0


class Aging:
    what = "priority aging"

    def __init__(self, after_s: float, step: int, max_priority: int | None,
                 batch: int = aging.AGE_BATCH) -> None:
        self.after_s = after_s
        self.step = step
        self.max_priority = max_priority
        self.batch = batch
        self.every_s = min(max(after_s / 4, 1.0), 60.0)
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def run_once(self, now: float) -> int:
        """One pass; raises DatabaseUnavailable (the master counts it as an outage)."""
        began = time.monotonic()
        raised = sum(aging.age(self.after_s, step=self.step, max_priority=self.max_priority,
                               batch=self.batch).values())
        # Its lookup walks the claim index from the head (queue_core/pacing.py).
        self.next_at = now + (AGAIN_S if raised >= self.batch else
                              pacing.delay(self.every_s, time.monotonic() - began))
        return raised

    def slowed(self, now: float, took_s: float) -> None:
        self.next_at = now + pacing.delay(self.every_s, took_s)
