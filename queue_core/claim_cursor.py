"""Where a claimer's next claim starts in the claim index, while walking it from its
head has become slow.

A claim moves its rows out of "WorkerJob_claim_idx" (status PENDING) by an
update that cannot be HOT (status is in the index's predicate): the old
version's index entry stays until vacuum removes it, and no scan may mark it
dead while some snapshot could still see the old version. A transaction that
holds such a snapshot (a long report, a REPEATABLE READ session left open, a
replication slot's xmin) therefore leaves at the head of the index, where every
claim starts, one entry per job claimed since it began, and every claim visits
each one's heap row: O(jobs claimed so far) per claim (docs/benchmarks.md,
"A long transaction held open").

`ClaimCursor` remembers, per priority, the "availableAt" of the first row the
claimer's last claim took there; the next claim walks the index in its order,
by segments: each remembered priority from its position on, the priorities in
between from their heads (`sql._FROM_SEGMENTS`). Rows can become ready behind
a position: a transaction that enqueued with an earlier "availableAt" and
committed late, a held-back job let in by flow control or aging (they keep
their place in the order), rows another claim had locked and left. So a claim
from the head still runs every `full_every_s`, or less often when it is slow
(its walks take no more than HEAD_SHARE of the child's time), which picks them
up: with segments a row waits at most that long beyond its turn, and none is
skipped for good. Segments are used only while the claims from the head are
slow (from the second in a row that took `slow_s` on the server, `claim_s`,
to the third in a row under a third of it); otherwise every claim starts at the
head as before, and nothing waits behind a cursor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from skiplock.queue_core.database.arrays import number_array, text_array

log = logging.getLogger("skiplock.queue")

# PostgreSQL's integer range: the bounds of the segments between remembered priorities.
_TOP, _BOTTOM = 2**31 - 1, -(2**31)
# A claim from the head that took this long on the server (twice in a row) turns
# segments on; three in a row under a third of it turn them off. The server's time
# of a pool child's claim includes its planning and the machine's load: 1-4 ms,
# at times 13, on the development machine under churn with no snapshot held
# (0.3-0.5 ms on a quiet one); behind a held snapshot it grows with every job
# claimed (100 ms after about 3 minutes at 4,000 jobs/s), and a child that claims
# a few jobs at a time pays it for every few jobs.
SLOW_S = 0.010
# With segments on, a claim from the head at least this often, and no more often
# than keeps its walks to HEAD_SHARE of the child's time: the longest a row that
# became ready behind a position waits beyond its turn (0.25 s, up to 5 s when a
# claim from the head takes 100 ms). Every child pays for its own walks: at 0.05 the
# two children of the benchmark spent a tenth of a core of the server on them.
FULL_EVERY_S = 0.25
HEAD_SHARE = 0.02
WARN_EVERY_S = 600.0
# The most priorities remembered (the highest kept); the others are walked from
# their heads.
MAX_BANDS = 16


class ClaimCursor:
    def __init__(self, *, slow_s: float = SLOW_S, full_every_s: float = FULL_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slow_s = slow_s
        self.full_every_s = full_every_s
        self.clock = clock
        self.positions: dict[int, datetime] = {}
        self.slow_in_a_row = 0  # claims from the head that took slow_s or more, in a row
        self.fast_in_a_row = 0  # ... that took less than a third of it
        self._on = False
        self.last_full = float("-inf")
        self.last_head_s = 0.0  # the server's time of the last claim from the head
        self.claims_from_head = 0
        self.warn_at = float("-inf")  # when turning on may be a warning again
        self.claims_from_segments = 0

    def start_at(self, positions: dict[int, datetime]) -> None:
        """Claim from these positions (priority -> "availableAt") from now on, until a
        claim from the head is due (a benchmark's sampler, tests)."""
        self.positions = dict(positions)
        self._on = True
        self.last_full = self.clock()

    @property
    def on(self) -> bool:
        """Whether claims start from remembered positions (from the head is slow)."""
        return self._on

    def segments(self) -> dict[str, Any] | None:
        """The next claim's segments as its parameters (`sql.CLAIM_FROM` ...), or None:
        the next claim starts at the index's head."""
        if not self.on or not self.positions or self.clock() - self.last_full >= max(
                self.full_every_s, self.last_head_s / HEAD_SHARE):
            return None
        # A copy: the answer of a claim sent ahead may be read by a timer's thread
        # (pool/completer.py), which updates the positions.
        positions = dict(self.positions)
        his, los, froms = [], [], []
        above = _TOP
        for band in sorted(positions, reverse=True):
            if band < above:  # the priorities between the last band and this one
                his.append(above)
                los.append(band + 1)
                froms.append("-infinity")
            his.append(band)
            los.append(band)
            froms.append(positions[band].isoformat())
            above = band - 1
        his.append(above)
        los.append(_BOTTOM)
        froms.append("-infinity")
        return {"seg_hi": number_array(his), "seg_lo": number_array(los),
                "seg_from": text_array(froms)}

    def claimed(self, jobs: Sequence[Any], claim_s: float | None, *, from_head: bool) -> None:
        """What a claim took (in any order: objects with `priority` and `available_at`)
        and how long the server took to it (None: not known, nothing came back)."""
        if from_head:
            self.claims_from_head += 1
            self.last_full = self.clock()
            if claim_s is not None:
                self.last_head_s = claim_s
                was = self._on
                self.slow_in_a_row = self.slow_in_a_row + 1 if claim_s >= self.slow_s else 0
                self.fast_in_a_row = self.fast_in_a_row + 1 if claim_s < self.slow_s / 3 else 0
                # On at the second slow claim in a row; off at the third fast one: the
                # time of one walk varies two- or threefold with the machine's load.
                if self.slow_in_a_row >= 2:
                    self._on = True
                elif self.fast_in_a_row >= 3:
                    self._on = False
                if self._on and not was:
                    # On a loaded machine the head's claims cross SLOW_S now and then with
                    # no snapshot held: one warning in WARN_EVERY_S, the other turns at INFO.
                    now = self.clock()
                    level = logging.WARNING if now >= self.warn_at else logging.INFO
                    if level == logging.WARNING:
                        self.warn_at = now + WARN_EVERY_S
                    log.log(level, "a claim from the head of the claim index took %.1f ms (a "
                            "long transaction or a replication slot may hold back vacuum): "
                            "claims start from remembered positions", claim_s * 1000)
                elif was and not self._on:
                    log.info("a claim from the head of the claim index took %.1f ms: claims "
                             "start at the head again", claim_s * 1000)
        else:
            self.claims_from_segments += 1
        first: dict[int, datetime] = {}
        for job in jobs:
            at = job.available_at
            if at is not None and (job.priority not in first or at < first[job.priority]):
                first[job.priority] = at
        self.positions.update(first)
        if len(self.positions) > MAX_BANDS:
            for band in sorted(self.positions)[:len(self.positions) - MAX_BANDS]:
                del self.positions[band]
