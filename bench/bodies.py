"""The job bodies every system in the benchmarks runs, in plain Python (no imports
beyond the standard library), so that skiplock's handlers and PgQueuer's
entrypoints in the bench-only virtualenv execute literally the same code."""

from __future__ import annotations

import os
import time


def noop() -> None:
    """Nothing: the whole cost of the job is the queue's."""


def burn(ms: float) -> int:
    """Hold the CPU in pure Python for `ms` milliseconds of this process's CPU time."""
    until = time.process_time() + ms / 1000
    n = 0
    while time.process_time() < until:
        n += 1
    return n


def record_pickup(enqueued_at: float) -> None:
    """Append how long ago (wall clock, s) the job was enqueued to $BENCH_PICKUP_FILE.

    One short O_APPEND write per job: lines of concurrent processes never mix."""
    path = os.environ.get("BENCH_PICKUP_FILE")
    if path:
        line = f"{time.time() - enqueued_at:.6f}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
