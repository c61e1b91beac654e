"""The retry schedule: the original TypeScript service's formula, with a cap and jitter.

That service (docs/README.md, "The seed") waits `2 ** attempts * 5` seconds,
where `attempts` already counts the attempt that just failed. Its own table
("attempt 1: 5 seconds") is off by one; the true schedule is:

    after attempt 1 fails:  10 s
    after attempt 2 fails:  20 s
    after attempt 3 fails:  40 s
    after attempt n fails:  5 * 2**n s, capped at one hour

Each delay is spread by +/-10 % so that jobs that failed together (a database
blip) do not all come back in the same second.
"""

from __future__ import annotations

import random
from collections.abc import Callable

BASE_S = 5.0
CAP_S = 3600.0
JITTER = 0.10


def backoff_base_s(attempts: int) -> float:
    """The delay before the next try, once `attempts` tries have failed (no jitter)."""
    return min(CAP_S, BASE_S * 2.0 ** max(0, min(attempts, 30)))


def backoff_s(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """`backoff_base_s` spread uniformly over +/-JITTER."""
    return backoff_base_s(attempts) * (1.0 - JITTER + 2.0 * JITTER * rand())
