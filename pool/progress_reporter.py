"""A child's side of `skiplock.progress` and `skiplock.checkpoint`: the latest report,
sent to the master at most every `MIN_INTERVAL_S`.

A handler may report in a tight loop, and the master only needs the latest
value at its next heartbeat: a report that comes too soon after the last one
sent is kept, and a timer thread sends the latest kept one when the interval
is over (so a handler that reports and then works for an hour is seen). Each
message is one write under PIPE_BUF, atomic beside the main thread's (a
longer checkpoint goes through the loud pipe, under the child's send lock); a
late report of a job that already finished is ignored by the master.

Progress and checkpoints are throttled apart (`ProgressReporter`,
`CheckpointReporter`): a progress report never holds back a checkpoint.
What a SIGKILL loses is what was kept and not yet sent, at most one interval
of reports; a child that exits on its own, or abandons its job on QUIT,
sends what it kept first (`flush`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from skiplock.pool import protocol

MIN_INTERVAL_S = 0.25


class _Throttled:
    """The latest report of the running job, sent at most every `MIN_INTERVAL_S`."""

    def __init__(self, send: Callable[[protocol.Message], None]) -> None:
        self.send = send
        self.lock = threading.Lock()
        self.job_id: str | None = None
        self.sent_at = 0.0
        self.kept: protocol.Progress | protocol.Checkpoint | None = None
        self.timer: threading.Timer | None = None

    def start(self, job_id: str) -> None:
        with self.lock:
            self.job_id = job_id
            self.sent_at = 0.0
            self.kept = None

    def offer(self, build: Callable[[str], protocol.Progress | protocol.Checkpoint]) -> None:
        """Send `build(job id)` now, or keep it for the timer if the last one went too
        recently."""
        with self.lock:
            if self.job_id is None:
                return
            report = build(self.job_id)
            wait = self.sent_at + MIN_INTERVAL_S - time.monotonic()
            if wait > 0:
                self.kept = report
                if self.timer is None:
                    self.timer = threading.Timer(wait, self.flush)
                    self.timer.daemon = True
                    self.timer.start()
                return
            self.kept = None
            self.sent_at = time.monotonic()
        self.send(report)

    def flush(self) -> None:
        """Send the kept report of the running job, if any (the timer's, and the child's
        before it exits)."""
        with self.lock:
            self.timer = None
            report, self.kept = self.kept, None
            if report is None or report.id != self.job_id:
                return
            self.sent_at = time.monotonic()
        # The master is gone: the main thread finds out by itself.
        with contextlib.suppress(OSError):
            self.send(report)


class ProgressReporter(_Throttled):
    def __call__(self, fraction: float | None, message: str | None) -> None:
        self.offer(lambda job_id: protocol.Progress(job_id, fraction, message))


class CheckpointReporter(_Throttled):
    def __call__(self, state: str) -> None:
        self.offer(lambda job_id: protocol.Checkpoint(job_id, state))
