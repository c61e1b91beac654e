"""Debounce when it does not bind: every job has a key of its own.

    python -m bench flow --only debounce [--jobs 20000]

Measured in one run, on the same scratch database, side by side:
- enqueue throughput, one `enqueue()` per job, without a debounce key and with
  a distinct one per job (`debounce=0`: due at once; every enqueue is an
  INSERT ... ON CONFLICT DO UPDATE that finds no conflict), and the same in
  batches of 1,000 (`enqueue_many`); beside them, a distinct idempotency key
  per job, the cost every unique key already has (a unique index entry, a
  speculative insertion, RETURNING);
- the pool's throughput (no-op jobs, 2 children) on such jobs against plain ones:
  each claim of a keyed row also clears its key (migration 0020's trigger).
The ratio of each pair is what matters; the absolute figures are as noisy as
the machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import fill, sql, start_pool, stop_pool
from bench.pool import _rate, _wait_done
from skiplock import queue_core as q

_ONE_BY_ONE = 2_000


def _options(i: int, key: str | None) -> dict[str, Any]:
    if key == "debounce":
        return {"debounce": 0, "debounce_key": f"k{i}"}
    if key == "idempotency":
        return {"idempotency_key": f"k{i}"}
    return {}


def _one_by_one(url: str, count: int, key: str | None) -> float:
    sql(url, 'TRUNCATE "WorkerJob"')
    began = time.perf_counter()
    for i in range(count):
        q.enqueue("BENCH_NOOP", {}, **_options(i, key))
    return count / (time.perf_counter() - began)


def _batches(url: str, count: int, key: str | None) -> float:
    sql(url, 'TRUNCATE "WorkerJob"')
    began = time.perf_counter()
    for start in range(0, count, 1000):
        q.enqueue_many([{"type": "BENCH_NOOP", "payload": {}, **_options(i, key)}
                        for i in range(start, min(count, start + 1000))])
    return count / (time.perf_counter() - began)


def _pool(url: str, count: int, key: str | None) -> float:
    keyed = key is not None
    sql(url, 'TRUNCATE "WorkerJob"')
    if keyed:
        for start in range(0, count, 10_000):
            q.enqueue_many([{"type": "BENCH_NOOP", "payload": {}, "debounce": 0,
                             "debounce_key": f"k{i}"}
                            for i in range(start, min(count, start + 10_000))])
        sql(url, 'VACUUM ANALYZE "WorkerJob"')
    else:
        fill(count, "BENCH_NOOP", {})
    proc = start_pool(url, "--concurrency", "2")
    try:
        _wait_done(count)
    finally:
        stop_pool(proc)
    return _rate(count)


def run_case(url: str, args: argparse.Namespace) -> None:
    one = min(_ONE_BY_ONE, args.jobs)
    for label, measure, n in (("enqueue(), one by one", _one_by_one, one),
                              ("enqueue_many, 1,000 a call", _batches, args.jobs),
                              ("pool, 2 children, no-op jobs", _pool, args.jobs)):
        off = measure(url, n, None)
        on = measure(url, n, "debounce")
        line = (f"{label:<30} no key {off:>8.0f}/s   debounce key each {on:>8.0f}/s "
                f"(ratio {on / off:.2f})")
        if measure is not _pool:  # the unique key any keyed enqueue pays, for reference
            idem = measure(url, n, "idempotency")
            line += f"   idempotency key each {idem:>8.0f}/s (ratio {idem / off:.2f})"
        print(line)
