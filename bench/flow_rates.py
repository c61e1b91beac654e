"""Rate limits per window (queue_core/features/rates.py): what a rate that does not bind
costs, and what the claim costs beside a large rate-limited backlog.

    python -m bench flow --only rates [--jobs 20000]

Every figure is taken on two databases at the same moments, the run's own (A, no
rate) and a second scratch database (B, with rates): each claimer takes a batch
from A, then one from B, and so on, and each database's time is the sum of its
own batches. A machine busy with other work slows both alike, and the ratio
stands where the absolute figures do not.

1. Throughput: `--jobs` no-op jobs in each database, claimed (up to 10 at a time)
   and completed by two claimer processes; in B every job has a rate that never
   binds, per type (one key, "1000000/h") and then per key (100 keys,
   "100000/h"). Each start of a limited job writes its token down and lets the
   key's next job in, in the claim's transaction: that is the cost measured.
2. The claim's p50/p99 (claims of one job, bench/claim.py's `_latency`) with,
   in B, 10,000 rate-limited keys ("1/h": their windows bind) and 1,000,000 jobs
   held back for their windows: first claims of plain jobs (the backlog sits
   outside the claim's index), then claims of the keys' jobs let in (each
   claim's trigger takes the token and lets the key's next job in, not due for an
   hour, into the claim's index).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from sqlalchemy import create_engine

from bench.claim import _latency
from bench.common import percentile, sql
from skiplock import queue_core as q
from skiplock.queue_core.database import scratch

CLAIMERS = 2
KEYS = 10_000
HELD = 1_000_000
_EMPTY = 'TRUNCATE "WorkerJob", "WorkerRateKey", "WorkerRateToken"'


def _drain_both(args: tuple[str, str, str]) -> tuple[int, float, int, float]:
    """Alternate batches between the two databases until both are empty: (jobs, seconds)
    of each."""
    worker, plain_url, rated_url = args
    engines = [create_engine(plain_url), create_engine(rated_url)]
    conns = [e.connect().execution_options(isolation_level="AUTOCOMMIT") for e in engines]
    done, spent, empty = [0, 0], [0.0, 0.0], [False, False]
    while not all(empty):
        for i, conn in enumerate(conns):
            if empty[i]:
                continue
            t0 = time.perf_counter()
            jobs = q.claim(worker, limit=10, conn=conn)
            for job in jobs:
                q.complete(job, conn=conn)
            spent[i] += time.perf_counter() - t0
            done[i] += len(jobs)
            empty[i] = not jobs
    for conn in conns:
        conn.close()
    return done[0], spent[0], done[1], spent[1]


def _fill(url: str, jobs: int, rate: str | None, keys: int) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for start in range(0, jobs, 10_000):
            batch = []
            for i in range(start, min(start + 10_000, jobs)):
                job: dict[str, object] = {"type": "BENCH", "payload": {}}
                if rate is not None:
                    job.update(rate=rate, rate_key=f"k{i % keys}")
                batch.append(job)
            q.enqueue_many(batch, conn=conn)
    engine.dispose()
    sql(url, 'VACUUM ANALYZE "WorkerJob"')


def _throughput(plain_url: str, rated_url: str, jobs: int, rate: str, keys: int) -> str:
    for url in (plain_url, rated_url):
        sql(url, _EMPTY)
    _fill(plain_url, jobs, None, 1)
    _fill(rated_url, jobs, rate, keys)
    with multiprocessing.get_context("fork").Pool(CLAIMERS) as pool:
        results = pool.map(_drain_both, [(f"w{i}", plain_url, rated_url)
                                         for i in range(CLAIMERS)])
    plain_done, plain_s = sum(r[0] for r in results), sum(r[1] for r in results)
    rated_done, rated_s = sum(r[2] for r in results), sum(r[3] for r in results)
    assert plain_done == rated_done == jobs, (plain_done, rated_done, jobs)
    plain_rate, rated_rate = plain_done * CLAIMERS / plain_s, rated_done * CLAIMERS / rated_s
    return (f"{plain_rate:>7.0f} jobs/s without, {rated_rate:>7.0f} with: "
            f"{rated_rate / plain_rate:.2f}")


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
    print(f"  B: {HELD:,} jobs held back over {KEYS:,} keys of 1/h, one of each let in "
          f"(filled in {time.perf_counter() - began:.0f} s)")


def _claims(label: str, figures: list[tuple[list[float], list[float]]]) -> None:
    (a, _), (b, _) = figures
    print(f"  {label:<44} A p50 {percentile(a, .5):.2f} ms, p99 {percentile(a, .99):.2f} ms; "
          f"B p50 {percentile(b, .5):.2f} ms, p99 {percentile(b, .99):.2f} ms")


def run_case(url: str, args: argparse.Namespace) -> None:
    jobs = int(args.jobs)
    with scratch.scratch_database("skiplock_bench_rates") as rated_url:
        print(f"throughput: {jobs} no-op jobs in each database, {CLAIMERS} claimer "
              "processes, claims of up to 10, A and B in turns")
        for label, rate, keys in (("per type, 1000000/h (one key)", "1000000/h", 1),
                                  ("per key, 100000/h (100 keys)", "100000/h", 100)):
            print(f"  {label:<32} {_throughput(url, rated_url, jobs, rate, keys)}")
        print("claim latency, one job per claim, A and B in turns (2000 of each):")
        for u in (url, rated_url):
            sql(u, _EMPTY)
        _held_backlog(rated_url)
        _fill(url, 4100, None, 1)
        engines = [create_engine(url), create_engine(rated_url)]
        with engines[1].begin() as conn:
            q.enqueue_many([{"type": "BENCH", "payload": {}, "priority": 1}
                            for _ in range(2020)], conn=conn)
        _claims("plain jobs (B: beside the held backlog)", _latency(engines, 2000))
        _claims("B: the rate-limited keys' jobs let in", _latency(engines, 2000))
        for engine in engines:
            engine.dispose()
        for u in (url, rated_url):
            sql(u, _EMPTY)
