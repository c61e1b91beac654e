"""`skiplock.progress(fraction, message)`: how far a running job has come.

Called from inside a handler. In a pool child the latest report goes to the
master over the child's pipe (at most about four a second: a handler may call
it in a tight loop), and the master writes it with the next heartbeat, in the
same statement (no statement per call). It shows in `skiplock job`
("progress", "progressMessage"), `skiplock ps` and the metrics. Outside a pool
(a handler called directly, `skiplock.testing.drain()`), the last report is
kept in `last_reported()` for tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from skiplock.queue_core.errors import InvalidJob

MAX_MESSAGE = 500

Reporter = Callable[[float | None, str | None], None]

_reporter: Reporter | None = None
_last: tuple[float | None, str | None] | None = None


def progress(fraction: float | None = None, message: str | None = None) -> None:
    """Report the running job's progress: `fraction` from 0 to 1, and/or a short message."""
    global _last
    if fraction is not None:
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                or not math.isfinite(fraction) or not 0 <= fraction <= 1):
            raise InvalidJob(f"progress must be a fraction from 0 to 1, not {fraction!r}")
        fraction = float(fraction)
    if message is not None:
        message = str(message).replace("\x00", "")[:MAX_MESSAGE]
    _last = (fraction, message)
    if _reporter is not None:
        _reporter(fraction, message)


def set_reporter(reporter: Reporter | None) -> None:
    """Where reports go (a pool child sets its pipe to the master)."""
    global _reporter
    _reporter = reporter


def last_reported() -> tuple[float | None, str | None] | None:
    return _last


def reset() -> None:
    global _last
    _last = None
