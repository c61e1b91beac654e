"""Who pays for a run: the rules that make every job end, and no job pay for another's fault.

A run of a job ends in one of four ways, and each is accounted for on the row:

- **its own outcome**: completed, or failed (the handler raised, returned a
  failure, overran its timeout, or killed its process). The attempt the claim
  counted stays counted; a retry waits for the back-off (`backoff.py`).
- **an interruption**: the run was cut short by something that need not be
  the job's fault: its database connection was lost, the pool stopped or
  replaced the child (TERM past the graceful timeout, QUIT, HUP, TTOU), or its
  host died and stuck recovery rescued it. The first `FREE_INTERRUPTIONS`
  interruptions of a job are free: the attempt is given back and
  `"interruptions"` counts one more. Every later interruption is charged like
  a failure. So an occasional deploy or database restart costs a job nothing,
  while a job that breaks its own connection, hangs past every restart, or is
  interrupted again and again still ends: it runs at most
  `maxAttempts + FREE_INTERRUPTIONS` times in all.
- **never started**: the job was claimed (in a batch, or in the window
  between a claim's commit and the child's report of it) but no handler ran.
  It goes back at once, the attempt given back, nothing counted.
- **lost**: another worker holds it now (it was rescued); nothing changes.

Every run that ends without completing sets `"lastError"` to what happened,
and every run that will be retried waits first: the failure back-off for a
charged run, `interruption_backoff_s` for a free one (a connection that
breaks at once must not spin the job through the pool).
"""

from __future__ import annotations

import random
from collections.abc import Callable

# Free interruptions per job (counted in "WorkerJob"."interruptions").
FREE_INTERRUPTIONS = 3
# The wait before the run after a free interruption: 2 s, then 4 s, then 8 s.
INTERRUPTION_BACKOFF_S = 2.0
JITTER = 0.10


def interruption_backoff_base_s(rand: Callable[[], float] = random.random) -> float:
    """The first free interruption's wait, spread by +/-JITTER; the SQL doubles it for
    each earlier interruption of the same job (`sql.INTERRUPT`)."""
    return INTERRUPTION_BACKOFF_S * (1.0 - JITTER + 2.0 * JITTER * rand())


def max_runs(max_attempts: int) -> int:
    """The most runs a job with `max_attempts` can get before it ends."""
    return max_attempts + FREE_INTERRUPTIONS
