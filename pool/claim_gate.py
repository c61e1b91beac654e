"""Children take work only while their master can keep its lease.

A job a child claims lives on its master's heartbeats. When the master cannot
send them (the database refuses it, or the master is stuck, starved or
stopped), a new claim would only make one more lease that nobody renews. The
master opens the gate until a moment shortly after its last round of
heartbeats that reached the database; the children read that moment before
each claim. A master that stops writing (for whatever reason) closes the gate
by doing nothing, which is why it is a deadline and not a flag.

The moment lives in one page of memory shared across the fork (an anonymous
MAP_SHARED mapping made before the children exist), read and written as one
aligned 8-byte double: no pipe, no signal, no lock. Both sides use
CLOCK_MONOTONIC, which is one clock for all processes of a host.
"""

from __future__ import annotations

import mmap
import struct
import time

_FORMAT = "d"


class ClaimGate:
    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared with children
        self.open_until(0.0)

    def open_until(self, deadline: float) -> None:
        """Master: children may claim until `deadline` (time.monotonic)."""
        struct.pack_into(_FORMAT, self._page, 0, deadline)

    def deadline(self) -> float:
        return float(struct.unpack_from(_FORMAT, self._page, 0)[0])

    def is_open(self, now: float | None = None) -> bool:
        """Child: may it claim now?"""
        return (time.monotonic() if now is None else now) < self.deadline()
