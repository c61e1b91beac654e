"""Riding out a database that went away: back off, log once, come back alone.

docs/lessons.md: a pool that cannot reach the database must back off, log one line
per fault, and come back by itself after a restart or a failover. An `Outage`
is that policy for one kind of work (the claim loop, the heartbeats, the
observers' writes, ...): the first failure logs a warning, the next ones stay
quiet and wait longer each time, and the first success afterwards logs that it
is over.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from sqlalchemy import exc as sa_exc

from skiplock.queue_core.errors import DatabaseUnavailable, SkiplockError

# What database work may throw that is an outage to ride out, not a bug: a
# server that is down, or tables that are not migrated yet.
EXPECTED = (SkiplockError, sa_exc.DBAPIError)

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 10.0


class Outage:
    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        initial_s: float = INITIAL_DELAY_S,
        max_s: float = MAX_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = logger
        self.clock = clock
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self.since: float | None = None
        self.retry_at = 0.0

    @property
    def active(self) -> bool:
        return self.failures > 0

    def ready(self, now: float | None = None) -> bool:
        """Whether it is time to try again."""
        return (self.clock() if now is None else now) >= self.retry_at

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns the seconds to wait before the next try."""
        now = self.clock()
        if self.failures == 0:
            self.since = now
            trouble = "unavailable" if isinstance(exc, DatabaseUnavailable) else "failing"
            self.log.warning("%s: database %s (%s); retrying with back-off",
                             self.what, trouble, _one_line(exc))
        self.failures += 1
        delay = min(self.max_s, min(self.initial_s, self.max_s) * 2 ** (self.failures - 1))
        delay *= random.uniform(0.8, 1.2)  # children must not reconnect in lockstep
        self.retry_at = now + delay
        return delay

    def run(self, action: Callable[[], object]) -> bool:
        """Do `action` now, under this policy; False if it failed (and was logged, once).

        For work that keeps its own rhythm (an observer's beat): it does not wait
        for the back-off, it only keeps the log to one line per outage.
        """
        try:
            action()
        except EXPECTED as exc:
            self.failed(exc)
            return False
        self.succeeded()
        return True

    def succeeded(self) -> None:
        if self.failures:
            assert self.since is not None
            self.log.warning("%s: database back after %.1fs",
                             self.what, self.clock() - self.since)
        self.failures = 0
        self.since = None
        self.retry_at = 0.0


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig  # the driver's message, without the SQL SQLAlchemy appends
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
