"""The master's share of routing: it parks what nobody serves and puts back what it serves.

Parking is queue_core/features/parking.py; this decides when, in the master's turn of
database work (pool/master.py `maintain`):

- Put back (`unpark`) the parked jobs of the types this pool serves: at its
  first turn, then every heartbeat interval (a probe of an empty index when
  nothing is parked), and a second later again while a pass comes back full,
  or at once after a HUP changed the served set.
- Park (`park_unserved`) what no live master serves, every recovery interval,
  and a second later again while a pass found some. Only once this master
  has been connected for a full stuck timeout, as for stuck recovery
  (pool/recovery.py): after an outage every master's row in the process table
  is as old as its leases, and it needs that long to write it again before
  anyone may judge it gone and park its types.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from skiplock.queue_core import pacing
from skiplock.queue_core.features import parking

# A pass that found work is followed by another this much later (about the
# master's next turn), until the backlog is through: never a busy loop.
AGAIN_S = 1.0


class Routing:
    what = "parking"

    def __init__(self, unpark_every_s: float, park_every_s: float, stuck_timeout_s: float,
                 window: int = parking.PARK_WINDOW, batch: int = parking.UNPARK_BATCH) -> None:
        self.unpark_every_s = unpark_every_s
        self.park_every_s = park_every_s
        # A master is live while its row is younger than this, and a job is parked
        # only once it has been due this long (queue_core/sql.py PARK_UNSERVED).
        self.live_s = self.grace_s = stuck_timeout_s
        self.window = window
        self.batch = batch
        self.next_unpark_at = 0.0
        self.next_park_at = 0.0

    def served_changed(self) -> None:
        """A HUP changed what this pool serves: put back its parked jobs at once."""
        self.next_unpark_at = 0.0

    def unpark_due(self, now: float) -> bool:
        return now >= self.next_unpark_at

    def park_due(self, now: float, allowed_at: float | None) -> bool:
        return allowed_at is not None and now >= max(allowed_at, self.next_park_at)

    def unpark(self, served: Collection[str], now: float) -> int:
        back = sum(parking.unpark(served, batch=self.batch).values())
        self.next_unpark_at = now + (AGAIN_S if back >= self.batch else self.unpark_every_s)
        return back

    def park(self, served: Collection[str], now: float) -> int:
        began = time.monotonic()
        parked = sum(parking.park_unserved(served, live_s=self.live_s, grace_s=self.grace_s,
                                           window=self.window).values())
        # The front is read from the claim index's head (queue_core/pacing.py).
        self.next_park_at = now + (AGAIN_S if parked else
                                   pacing.delay(self.park_every_s, time.monotonic() - began))
        return parked

    def slowed(self, now: float, took_s: float) -> None:
        self.next_park_at = now + pacing.delay(self.park_every_s, took_s)
        self.next_unpark_at = now + pacing.delay(self.unpark_every_s, took_s)
