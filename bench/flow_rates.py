"""Rate limits per window (queue_core/features/rates.py): what a rate that does not bind
costs, and what the claim costs beside a large rate-limited backlog.

    python -m bench flow --only rates [--jobs 20000]

1. Throughput: `--jobs` no-op jobs claimed and completed by two claimer processes
   (claims of up to 10 jobs), unlimited, then with a rate that never binds, per type
   (one key, "1000000/h") and per key (100 keys, "100000/h"); each twice,
   interleaved, on the same database; the ratio to the unlimited rate of the same
   round. Each start of a limited job records its token and lets the key's next
   job in, in the claim's transaction: that is the cost measured.
2. The claim's p50/p99 with 10,000 rate-limited keys ("1/h": their windows bind)
   and 1,000,000 jobs held back for their windows, beside the same claims with none:
   claims of one job at a time, first of plain jobs (the backlog sits outside the
   claim's index), then of the keys' jobs let in (each claim's trigger takes the
   token and lets the key's next job in, not due for an hour).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from bench.common import percentile, sql
from skiplock import queue_core as q
from skiplock.queue_core.database import db

CLAIMERS = 2
KEYS = 10_000
HELD = 1_000_000


def _drain(worker: str) -> int:
    db.reset_engine()
    done = 0
    while jobs := q.claim(worker, limit=10):
        for job in jobs:
            q.complete(job)
            done += 1
    return done


def _throughput(url: str, jobs: int, rate: str | None, keys: int) -> float:
    sql(url, 'TRUNCATE "WorkerJob", "WorkerRateKey", "WorkerRateToken"')
    for start in range(0, jobs, 10_000):
        batch = []
        for i in range(start, min(start + 10_000, jobs)):
            job: dict[str, object] = {"type": "BENCH", "payload": {}}
            if rate is not None:
                job.update(rate=rate, rate_key=f"k{i % keys}")
            batch.append(job)
        q.enqueue_many(batch)
    sql(url, 'VACUUM ANALYZE "WorkerJob"')
    db.reset_engine()
    with multiprocessing.get_context("fork").Pool(CLAIMERS) as pool:
        began = time.perf_counter()
        done = sum(pool.map(_drain, [f"w{i}" for i in range(CLAIMERS)]))
        wall = time.perf_counter() - began
    assert done == jobs, f"{done} of {jobs} jobs ran"
    return done / wall


def _claims(samples: int) -> list[float]:
    ms = []
    for i in range(samples + 20):
        t0 = time.perf_counter()
        [job] = q.claim("latency")
        t1 = time.perf_counter()
        q.complete(job)
        if i >= 20:  # warm-up
            ms.append((t1 - t0) * 1000)
    return ms


def _held_backlog(url: str) -> None:
    """KEYS keys of rate 1/h and HELD jobs waiting for their windows, written with the
    table's triggers off (a million trigger calls would take minutes), then each key's
    first job let in by the function the triggers call."""
    began = time.perf_counter()
    sql(url, f"""
        BEGIN;
        SET LOCAL session_replication_role = replica;
        INSERT INTO "WorkerJob" (id, type, payload, status, priority, "availableAt", attempts,
                                 "maxAttempts", "createdAt", rate, "rateKey", "heldBack")
        SELECT 'held' || i, 'RATED', '{{}}', 'PENDING', 0, now() - interval '1 hour', 0, 3,
               now(), '1/3600s', 'key' || (i % {KEYS}), false
        FROM generate_series(1, {HELD}) AS i;
        INSERT INTO "WorkerRateKey" (key, count, "periodS")
        SELECT 'key' || k, 1, 3600 FROM generate_series(0, {KEYS - 1}) AS k;
        COMMIT""")
    sql(url, 'SELECT skiplock_rate_admit(key, NULL, false) FROM "WorkerRateKey"')
    sql(url, 'VACUUM ANALYZE "WorkerJob"')
    print(f"  {HELD:,} jobs held back over {KEYS:,} keys of 1/h, one of each let in "
          f"(filled in {time.perf_counter() - began:.0f} s)")


def run_case(url: str, args: argparse.Namespace) -> None:
    jobs = int(args.jobs)
    print(f"throughput: {jobs} no-op jobs, {CLAIMERS} claimer processes, claims of up to 10")
    cases = (("no rate", None, 1), ("per type, 1000000/h (one key)", "1000000/h", 1),
             ("per key, 100000/h (100 keys)", "100000/h", 100))
    for round_ in (1, 2):
        base = 0.0
        for label, rate, keys in cases:
            per_s = _throughput(url, jobs, rate, keys)
            base = base or per_s
            print(f"  round {round_}: {label:<32} {per_s:>8.0f} jobs/s  {per_s / base:>5.2f}")
    print("claim latency, one job per claim (p50 / p99 of 2000):")
    sql(url, 'TRUNCATE "WorkerJob", "WorkerRateKey", "WorkerRateToken"')
    q.enqueue_many([{"type": "BENCH", "payload": {}} for _ in range(2020)])
    sql(url, 'VACUUM ANALYZE "WorkerJob"')
    ms = _claims(2000)
    print(f"  no rate-limited jobs:             p50 {percentile(ms, .5):.2f} ms, "
          f"p99 {percentile(ms, .99):.2f} ms")
    _held_backlog(url)
    q.enqueue_many([{"type": "BENCH", "payload": {}, "priority": 1} for _ in range(2020)])
    ms = _claims(2000)
    print(f"  plain jobs beside the backlog:    p50 {percentile(ms, .5):.2f} ms, "
          f"p99 {percentile(ms, .99):.2f} ms")
    ms = _claims(2000)
    print(f"  the keys' jobs let in (trigger):  p50 {percentile(ms, .5):.2f} ms, "
          f"p99 {percentile(ms, .99):.2f} ms")
    sql(url, 'TRUNCATE "WorkerJob", "WorkerRateKey", "WorkerRateToken"')
