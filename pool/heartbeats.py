"""The master keeps the leases of its children's jobs alive.

docs/lessons.md: send heartbeats from a place a busy handler cannot block; a
pure-Python loop holding the GIL, or C code that never releases it, starves a
heartbeat thread in the same process. The master is that place: one statement
every `--heartbeat` seconds refreshes `"lockedAt"` of every job its children
hold, each fenced by its own lockedBy and attempt. A job missing from the
answer was rescued elsewhere; the master stops the child that runs it.

The same statement carries the progress the handlers reported since the last
beat, and answers which jobs an operator asked to cancel (`cancel_requested`,
read by the master after each beat; pool/cancelling.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from skiplock.queue_core.jobs import JobRef, Progress
from skiplock.queue_core.lifecycle import beat


class Heartbeats:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.next_at = 0.0
        self.cancel_requested: set[str] = set()
        self.progress: dict[str, Progress] = {}  # reported since the last beat, by job id

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def soon(self) -> None:
        """Beat at the next tick (after an outage, before recovery may judge our jobs)."""
        self.next_at = 0.0

    def beat(self, refs: Iterable[JobRef]) -> set[str]:
        """The ids still held; raises DatabaseUnavailable (the caller backs off)."""
        refs = list(refs)
        answer = beat(refs, self.progress)
        self.progress = {}
        self.cancel_requested = answer.cancel_requested
        self.next_at = time.monotonic() + self.interval_s
        return answer.held
