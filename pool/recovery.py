"""Stuck recovery, scheduled by the master: the second safety net.

A master settles the jobs of its own dead children at once (from `waitpid`);
this rescues the jobs of hosts and masters that died, whose heartbeats
stopped. It runs every `--recovery-interval` seconds, but only once this
master has been connected to the database for a full stuck timeout without a
break (docs/reliability.md, "Who may rescue"): after an outage every host's
leases are as old as ours, and their holders need one stuck timeout to renew
them (or to fence themselves) before anyone may judge them dead. A master
that just started counts as just reconnected.

Most looks are a window: the leases that ran out since the last look (from its
cutoff, less WINDOW_SLACK_S), a short range of the PROCESSING index. One look a
minute, or less often when it is slow (queue_core/pacing.py), takes in every lease:
what a window leaves out is a lease written by a transaction that committed more than
WINDOW_SLACK_S after it wrote it (never a pool's: its heartbeats and claims commit at
once), a row locked when its turn came, or a PROCESSING row without a lease.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from skiplock.queue_core import Recovered, pacing, recover_stuck
from skiplock.queue_core.features import fairness

WHOLE_EVERY_S = 60.0
WINDOW_SLACK_S = 10.0


class Recovery:
    what = "the stuck lookup"

    def __init__(self, interval_s: float, stuck_timeout_s: float, batch_size: int = 1000) -> None:
        self.interval_s = interval_s
        self.stuck_timeout_s = stuck_timeout_s
        self.batch_size = batch_size
        self.next_at = 0.0
        self.connected_since: float | None = None  # start of the current unbroken connection
        # Where the next look's window starts (the server's clock), and when the next
        # look at every lease is due.
        self.since: datetime | None = None
        self.whole_at = 0.0
        self.looking_whole = False

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
        whole = self.looking_whole = self.since is None or now >= self.whole_at
        began = time.monotonic()
        result = recover_stuck(self.stuck_timeout_s, batch_size=self.batch_size,
                               since=None if whole else self.since)
        took = time.monotonic() - began
        if whole:
            # A look at every lease walks the PROCESSING index from its oldest entry:
            # behind a held snapshot, past one for every job run since (queue_core/pacing.py).
            self.whole_at = now + pacing.delay(WHOLE_EVERY_S, took)
        if result.looked_before is not None:
            self.since = result.looked_before - timedelta(seconds=WINDOW_SLACK_S)
        # The fairness triggers only try their key's lock: a key whose last jobs left
        # while another entry held it has room and jobs waiting, until this sweep
        # (alembic/versions/0021_fairness.py). One index probe per waiting key.
        fairness.fill_turns()
        self.next_at = now + pacing.delay(self.interval_s, took)
        return result

    def slowed(self, now: float, took_s: float) -> None:
        if self.looking_whole:
            self.whole_at = now + pacing.delay(WHOLE_EVERY_S, took_s)
        self.next_at = now + pacing.delay(self.interval_s, took_s)
