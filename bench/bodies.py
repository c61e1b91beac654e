"""The job bodies every system in the benchmarks runs, in plain Python (no imports
beyond the standard library), so that skiplock's handlers and PgQueuer's
entrypoints in the bench-only virtualenv execute literally the same code."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def noop() -> None:
    """Nothing: the whole cost of the job is the queue's."""


def burn(ms: float) -> int:
    """Hold the CPU in pure Python for `ms` milliseconds of this process's CPU time.

    With $BENCH_SPAN_FILE set, the wall-clock start and end of the body are
    appended to it (one short write per job): the CPU-bound runs are timed from
    the first body's start to the last one's end, for the bare body and every
    queue alike, without a poller taking CPU from the run it measures. Each line
    also holds the process and its CPU time at the body's start and end: what
    the process spent between two bodies is the queue's own CPU per job there
    (`Spans.between_us`)."""
    began = time.time()
    cpu_began = time.process_time()
    until = cpu_began + ms / 1000
    n = 0
    while time.process_time() < until:
        n += 1
    path = os.environ.get("BENCH_SPAN_FILE")
    if path:
        _append(path, f"{began:.6f} {time.time():.6f} {os.getpid()} {cpu_began:.6f} "
                      f"{time.process_time():.6f}\n")
    return n


def _append(path: str, line: str) -> None:
    """One O_APPEND write: lines of concurrent processes never mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Spans:
    """What a span file says about a run of CPU-bound bodies."""

    rate: float  # jobs/s: the count over the first start to the last end
    # Mean CPU time (us) a process spent between the end of one body and the start
    # of its next: the queue's code around each job (plus this file's own write,
    # which the bare body's figure shows alone).
    between_us: float
    first_start: float  # wall clock, s: the first body's start and the last one's end
    last_end: float
    # How long after the first process to finish its last body the last one did:
    # work left on one process while the others had none (a queue running dry).
    tail_s: float


def read_spans(path: str) -> Spans:
    by_process: dict[str, list[tuple[float, float, float, float]]] = {}
    with open(path) as handle:
        for line in handle:
            fields = line.split()
            if len(fields) == 5:
                began, ended, cpu_began, cpu_ended = map(float, fields[:2] + fields[3:])
                by_process.setdefault(fields[2], []).append((began, ended, cpu_began, cpu_ended))
    every = [span for spans in by_process.values() for span in spans]
    first, last = min(s[0] for s in every), max(s[1] for s in every)
    gaps = []
    for spans in by_process.values():
        spans.sort()
        gaps += [later[2] - earlier[3] for earlier, later in zip(spans, spans[1:], strict=False)]
    last_ends = [max(s[1] for s in spans) for spans in by_process.values()]
    return Spans(len(every) / (last - first), 1e6 * sum(gaps) / len(gaps) if gaps else 0.0,
                 first, last, max(last_ends) - min(last_ends))


def record_pickup(enqueued_at: float) -> None:
    """Append how long ago (wall clock, s) the job was enqueued to $BENCH_PICKUP_FILE.

    One short O_APPEND write per job: lines of concurrent processes never mix."""
    path = os.environ.get("BENCH_PICKUP_FILE")
    if path:
        _append(path, f"{time.time() - enqueued_at:.6f}\n")
