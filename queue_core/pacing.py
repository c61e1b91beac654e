"""How often a periodic walk of the hot table runs when it has become slow.

The periodic statements of a master (stuck recovery, the history mover's pass from
the head of the finished index, the metrics' reading of the queue) take a
millisecond or a few on a healthy table. Behind a held snapshot (a long
transaction, a REPEATABLE READ session left open, a replication slot's xmin)
vacuum may remove no row version the snapshot could see, the index entries of
every job that ran since stay, and each of these statements walks them: its time
grows with every job run, to hundreds of milliseconds after a few minutes at
thousands of jobs a second (docs/benchmarks.md, "A long transaction held open").
Run at their usual interval, they would take a growing share of the server, which
the claims and completions need. So each runs again after its interval or after
`1 / SHARE` times its last run's duration, whichever is longer: together they
never take more than a few percent of the server's time, and they come back to
their interval as soon as the snapshot ends and vacuum has cleaned up.
"""

from __future__ import annotations

# The share of the time one periodic walk may take: a statement that took 100 ms
# runs again after 10 s at the earliest.
SHARE = 0.01


def delay(interval_s: float, took_s: float, share: float = SHARE) -> float:
    """Seconds until the next run of a periodic statement whose last run took `took_s`."""
    return max(interval_s, took_s / share)
