"""Sequences (queue_core/features/sequences.py): what they cost when they do not bind.

1. Throughput of `--jobs` no-op jobs under one pool (a child per CPU), written while
   their type is paused and then let go, spread over 1,000 sequences (each key runs
   one job at a time: 1,000 may run at once, far more than the pool's children, so
   the order never makes a child wait, though 19 jobs in 20 wait for the one before
   them and are let in by its end), and over as many keys as jobs (none waits: the
   order makes nobody wait), against the same jobs without a sequence; alternated,
   twice each, on the same database.
2. Enqueue cost per job: `enqueue_many` of the jobs in batches of 1,000, and 2,000
   single `enqueue()` calls, each with and without a sequence. A sequenced job is
   written by the insert of a job with columns of its own, and its trigger locks and
   bumps its key's row; an unsequenced single job takes the prepared fast path.
"""

from __future__ import annotations

import argparse
import os
import time

import psycopg2

from bench.common import sql, start_pool, stop_pool, wait_tag_completed
from skiplock import queue_core as q
from skiplock.ops.pauses import pause, resume
from skiplock.queue_core.database.urls import libpq_dsn

KEYS = 1_000
SINGLES = 2_000
BATCH = 1_000


def _jobs(n: int, tag: str, keys: int | None) -> list[dict[str, object]]:
    """`n` jobs over `keys` sequences (None: in none)."""
    return [{"type": "BENCH_NOOP", "payload": {"tag": tag, "i": i},
             **({"sequence": f"bench:{i % keys}"} if keys else {})} for i in range(n)]


def _enqueue_rate(n: int, tag: str, sequenced: bool) -> float:
    """Microseconds a job, for `enqueue_many` in batches."""
    jobs = _jobs(n, tag, KEYS if sequenced else None)
    began = time.perf_counter()
    for start in range(0, n, BATCH):
        q.enqueue_many(jobs[start:start + BATCH])
    return (time.perf_counter() - began) / n * 1e6


def _single_rate(tag: str, sequenced: bool) -> float:
    """Microseconds an `enqueue()` call."""
    began = time.perf_counter()
    for i in range(SINGLES):
        q.enqueue("BENCH_NOOP", {"tag": tag, "i": i},
                  sequence=f"bench:{i % KEYS}" if sequenced else None)
    return (time.perf_counter() - began) / SINGLES * 1e6


def _throughput(conn: psycopg2.extensions.connection, n: int, tag: str,
                keys: int | None) -> float:
    """Jobs a second, from the first start to the last completion. The type is paused
    while the jobs are written: the run measures the pool, not the enqueue beside it."""
    jobs = _jobs(n, tag, keys)
    pause("BENCH_NOOP", reason="bench: enqueueing")
    for start in range(0, n, BATCH * 10):
        q.enqueue_many(jobs[start:start + BATCH * 10])
    resume("BENCH_NOOP")
    wait_tag_completed(conn, tag, 900)
    with conn.cursor() as cur:
        cur.execute("""SELECT extract(epoch FROM max("completedAt") - min("startedAt"))
                       FROM "WorkerJob" WHERE payload->>'tag' = %s""", (tag,))
        return n / float(cur.fetchone()[0])


def run_case(url: str, args: argparse.Namespace) -> None:
    os.environ["DATABASE_URL"] = url
    n = args.jobs
    plain_batch = _enqueue_rate(n, "enqueue-plain", False)
    seq_batch = _enqueue_rate(n, "enqueue-seq", True)
    plain_single = _single_rate("single-plain", False)
    seq_single = _single_rate("single-seq", True)
    sql(url, 'TRUNCATE "WorkerJob"')
    print(f"enqueue_many in batches of {BATCH:,}: {plain_batch:.1f} us a job without a "
          f"sequence, {seq_batch:.1f} us with one ({seq_batch - plain_batch:+.1f} us)")
    print(f"enqueue() one at a time: {plain_single:.1f} us a job without a sequence, "
          f"{seq_single:.1f} us with one ({seq_single - plain_single:+.1f} us)")

    concurrency = str(os.cpu_count() or 2)
    pool = start_pool(url, "--concurrency", concurrency)
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    cases: dict[str, int | None] = {"plain": None, "busy": KEYS, "free": n}
    rates: dict[str, list[float]] = {case: [] for case in cases}
    try:
        _throughput(conn, 1_000, "warm-up", None)
        for rep in range(2):
            for case, keys in cases.items():
                rates[case].append(_throughput(conn, n, f"run-{rep}-{case}", keys))
                sql(url, """DELETE FROM "WorkerJob" WHERE status = 'COMPLETED'""")
    finally:
        conn.close()
        stop_pool(pool)
    mean = {case: sum(r) / len(r) for case, r in rates.items()}

    def runs(case: str) -> str:
        return ", ".join(f"{r:,.0f}" for r in rates[case])

    print(f"throughput, {n:,} no-op jobs, a pool of {concurrency}: {mean['plain']:,.0f} jobs/s "
          f"without a sequence (runs {runs('plain')}); {mean['busy']:,.0f} jobs/s in {KEYS:,} "
          f"sequences, {mean['busy'] / mean['plain']:.2f} of it (runs {runs('busy')}); "
          f"{mean['free']:,.0f} jobs/s with a sequence each, none waiting, "
          f"{mean['free'] / mean['plain']:.2f} of it (runs {runs('free')})")
