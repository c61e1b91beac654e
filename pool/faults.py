"""One line per fault for the operations observers, never a traceback in the master's log.

The observers touch the database from the master's loop; a database that is
down, or not migrated to the tables they use, must cost one log line per
outage (LESSONS.md: a pool must not flood its logs), and the pool goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import exc as sa_exc

from queue_core.errors import SkiplockError

EXPECTED = (SkiplockError, sa_exc.DBAPIError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, sa_exc.DBAPIError):
        text = str(exc.orig or exc).strip().splitlines()
        return text[0] if text else type(exc).__name__
    return str(exc)


class FaultLog:
    """Logs the first failure of an outage and the recovery; stays quiet in between."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.failing = False

    def run(self, action: Callable[[], object]) -> bool:
        try:
            action()
        except EXPECTED as exc:
            if not self.failing:
                self.log.warning("%s failed: %s", self.what, describe(exc))
            self.failing = True
            return False
        if self.failing:
            self.log.info("%s works again", self.what)
        self.failing = False
        return True
