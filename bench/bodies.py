"""The job bodies every system in the benchmarks runs, in plain Python (no imports
beyond the standard library), so that skiplock's handlers and PgQueuer's
entrypoints in the bench-only virtualenv execute literally the same code."""

from __future__ import annotations

import os
import time


def noop() -> None:
    """Nothing: the whole cost of the job is the queue's."""


def burn(ms: float) -> int:
    """Hold the CPU in pure Python for `ms` milliseconds of this process's CPU time.

    With $BENCH_SPAN_FILE set, the wall-clock start and end of the body are
    appended to it (one short write per job): the CPU-bound runs are timed from
    the first body's start to the last one's end, for the bare body and every
    queue alike, without a poller taking CPU from the run it measures."""
    began = time.time()
    until = time.process_time() + ms / 1000
    n = 0
    while time.process_time() < until:
        n += 1
    path = os.environ.get("BENCH_SPAN_FILE")
    if path:
        _append(path, f"{began:.6f} {time.time():.6f}\n")
    return n


def _append(path: str, line: str) -> None:
    """One O_APPEND write: lines of concurrent processes never mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def span_rate(path: str) -> float:
    """Jobs per second from a span file: the count over first start to last end."""
    with open(path) as handle:
        spans = [tuple(map(float, line.split())) for line in handle if line.strip()]
    return len(spans) / (max(end for _, end in spans) - min(start for start, _ in spans))


def record_pickup(enqueued_at: float) -> None:
    """Append how long ago (wall clock, s) the job was enqueued to $BENCH_PICKUP_FILE.

    One short O_APPEND write per job: lines of concurrent processes never mix."""
    path = os.environ.get("BENCH_PICKUP_FILE")
    if path:
        _append(path, f"{time.time() - enqueued_at:.6f}\n")
