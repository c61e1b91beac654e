"""The master's share of the history mover: when to run a pass (queue_core/features/history.py).

A pass moves at most one batch of each kind (finished, dead letters), so that a master's
turn stays short; a pass that moved a full batch is followed by another a second later,
until the backlog is through (a first move after adoption, or a pool that finishes
jobs faster than one batch every few seconds), else one every
`history.EVERY_S`. Every master runs it: the mover's advisory lock lets one move at a
time, and the others' passes find it taken and move nothing. The settings are read once,
at the first pass (new values: at the master's next start).
"""

from __future__ import annotations

import logging

from skiplock.queue_core.errors import PermissionDenied
from skiplock.queue_core.features import history

log = logging.getLogger("skiplock.history")

AGAIN_S = 0.1
# A role without the mover's grants (docs/operations.md): said once, tried again hourly,
# never counted as an outage of the database.
DENIED_AGAIN_S = 3600.0


class HistoryMover:
    def __init__(self, every_s: float = history.EVERY_S, batch: int = history.MOVE_BATCH) -> None:
        self.every_s = every_s
        self.batch = batch
        self.next_at = 0.0
        self.settings: history.Settings | None = None

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def run_once(self, now: float) -> int:
        """One pass; raises DatabaseUnavailable (the master counts it as an outage)."""
        try:
            if self.settings is None:
                self.settings = history.settings()
            moved = history.move(self.settings.after_s, self.settings.dead_after_s,
                                 batch=self.batch, limit=1)
        except PermissionDenied as exc:
            log.warning("finished jobs not moved to history: %s", exc)
            self.next_at = now + DENIED_AGAIN_S
            return 0
        self.next_at = now + (AGAIN_S if moved >= self.batch else self.every_s)
        return moved
