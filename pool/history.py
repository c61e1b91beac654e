"""The master's share of the history mover: when to run a pass (queue_core/features/history.py).

A pass moves at most one batch of each status (COMPLETED, FAILED, DEAD_LETTER), so
that a master's turn stays short; a pass that moved a full batch is followed by another
0.1 s later, until the backlog is through (a first move after adoption, or a pool that
finishes jobs faster than one batch every few seconds), else one every
`history.EVERY_S`. Most passes start where the last one stopped; one a minute, or less
often when it is slow, walks from the head (history.MoveCursor). Every master runs it:
the mover's advisory lock lets one move at a time, and the others' passes find it
taken and move nothing. The settings are read once, at the first pass (new values: at
the master's next start).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from skiplock.queue_core import pacing
from skiplock.queue_core.errors import PermissionDenied
from skiplock.queue_core.features import history

log = logging.getLogger("skiplock.history")

AGAIN_S = 0.1
# A role without the mover's grants (docs/operations.md): said once, tried again hourly,
# never counted as an outage of the database.
DENIED_AGAIN_S = 3600.0


class HistoryMover:
    what = "the history mover"

    def __init__(self, every_s: float = history.EVERY_S, batch: int = history.MOVE_BATCH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.batch = batch
        self.clock = clock
        self.next_at = 0.0
        self.settings: history.Settings | None = None
        self.cursor = history.MoveCursor()
        self.from_head = False  # the pass under way walks from the head

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def run_once(self, now: float) -> int:
        """One pass; raises DatabaseUnavailable (the master counts it as an outage)."""
        try:
            if self.settings is None:
                self.settings = history.settings()
            starts, from_head = self.cursor.pass_starts(now)
            self.from_head = from_head
            moved = history.move(self.settings.after_s, self.settings.dead_after_s,
                                 batch=self.batch, limit=1, starts=starts)
            self.cursor.passed(starts, now, self.clock() - now, from_head)
        except PermissionDenied as exc:
            log.warning("finished jobs not moved to history: %s", exc)
            self.next_at = now + DENIED_AGAIN_S
            return 0
        self.next_at = now + (AGAIN_S if moved >= self.batch else self.every_s)
        return moved

    def slowed(self, now: float, took_s: float) -> None:
        if self.from_head:
            self.cursor.head_at = now + pacing.delay(self.cursor.every_s, took_s)
        self.next_at = now + pacing.delay(self.every_s, took_s)
