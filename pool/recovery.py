"""Stuck recovery, scheduled by the master: the second safety net.

A master settles the jobs of its own dead children at once (from `waitpid`);
this rescues the jobs of hosts and masters that died, whose heartbeats
stopped. It runs every `--recovery-interval` seconds, but only once this
master has been connected to the database for a full stuck timeout without a
break (docs/reliability.md, "Who may rescue"): after an outage every host's
leases are as old as ours, and their holders need one stuck timeout to renew
them (or to fence themselves) before anyone may judge them dead. A master
that just started counts as just reconnected.
"""

from __future__ import annotations

from skiplock.queue_core import Recovered, recover_stuck
from skiplock.queue_core.features import fairness


class Recovery:
    def __init__(self, interval_s: float, stuck_timeout_s: float, batch_size: int = 1000) -> None:
        self.interval_s = interval_s
        self.stuck_timeout_s = stuck_timeout_s
        self.batch_size = batch_size
        self.next_at = 0.0
        self.connected_since: float | None = None  # start of the current unbroken connection

    def connected(self, since: float) -> None:
        """Database work that began at `since` succeeded."""
        if self.connected_since is None:
            self.connected_since = since

    def disconnected(self) -> None:
        self.connected_since = None

    def allowed_at(self) -> float | None:
        """From when this master may rescue (None: not while it is cut off)."""
        if self.connected_since is None:
            return None
        return self.connected_since + self.stuck_timeout_s

    def next_due(self) -> float | None:
        allowed = self.allowed_at()
        return None if allowed is None else max(allowed, self.next_at)

    def due(self, now: float) -> bool:
        at = self.next_due()
        return at is not None and now >= at

    def run_once(self, now: float) -> Recovered:
        """Rescue what is stuck (queue_core logs what it rescued); raises DatabaseUnavailable."""
        result = recover_stuck(self.stuck_timeout_s, batch_size=self.batch_size)
        # The fairness triggers only try their key's lock: a key whose last jobs left
        # while another entry held it has room and jobs waiting, until this sweep
        # (alembic/versions/0021_fairness.py). One index probe per waiting key.
        fairness.fill_turns()
        self.next_at = now + self.interval_s
        return result
