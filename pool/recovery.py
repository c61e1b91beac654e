"""Stuck recovery, scheduled by the master: the second safety net.

A master settles the jobs of its own dead children at once (from `waitpid`);
this rescues the jobs of hosts and masters that died, whose heartbeats
stopped. It runs at start and every `--recovery-interval` seconds.
"""

from __future__ import annotations

import time

from skiplock.queue_core import Recovered, recover_stuck


class Recovery:
    def __init__(self, interval_s: float, stuck_timeout_s: float, batch_size: int = 1000) -> None:
        self.interval_s = interval_s
        self.stuck_timeout_s = stuck_timeout_s
        self.batch_size = batch_size
        self.next_at = 0.0  # at start

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def run_once(self) -> Recovered:
        """Rescue what is stuck (queue_core logs what it rescued); raises DatabaseUnavailable."""
        result = recover_stuck(self.stuck_timeout_s, batch_size=self.batch_size)
        self.next_at = time.monotonic() + self.interval_s
        return result
