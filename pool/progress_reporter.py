"""A child's side of `skiplock.progress`: the latest report, sent to the master at most
every `MIN_INTERVAL_S`.

A handler may report in a tight loop, and the master only needs the latest
value at its next heartbeat: a report that comes too soon after the last one
sent is kept, and a timer thread sends the latest kept one when the interval
is over (so a handler that reports and then works for an hour is seen). Each
message is one write under PIPE_BUF, atomic beside the main thread's; a late
report of a job that already finished is ignored by the master.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from skiplock.pool import protocol

MIN_INTERVAL_S = 0.25


class ProgressReporter:
    def __init__(self, send: Callable[[protocol.Message], None]) -> None:
        self.send = send
        self.lock = threading.Lock()
        self.job_id: str | None = None
        self.sent_at = 0.0
        self.kept: protocol.Progress | None = None
        self.timer: threading.Timer | None = None

    def start(self, job_id: str) -> None:
        with self.lock:
            self.job_id = job_id
            self.sent_at = 0.0
            self.kept = None

    def __call__(self, fraction: float | None, message: str | None) -> None:
        with self.lock:
            if self.job_id is None:
                return
            report = protocol.Progress(self.job_id, fraction, message)
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
        with self.lock:
            self.timer = None
            report, self.kept = self.kept, None
            if report is None or report.id != self.job_id:
                return
            self.sent_at = time.monotonic()
        # The master is gone: the main thread finds out by itself.
        with contextlib.suppress(OSError):
            self.send(report)
