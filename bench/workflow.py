"""Workflows: a fan-out of 10,000 children and the fan-in that follows, and what an edge
costs at enqueue.

    python -m bench workflow [--children 10000] [--runs 5] [--small 200] [--concurrency 2]

Figures, from one run on one server:

1. Enqueue: `enqueue_many` of the children alone; of the children and one job that
   depends on all of them (references inside the call: no parent to lock); and one
   `enqueue(depends_on=[10,000 ids])` of existing jobs (each parent locked and
   marked). The cost per edge is the difference, divided by the edges.
2. Fan-in latency under a real pool (`skiplock worker`, no-op jobs): the time from
   the last child's completion ("completedAt", the statement that ends it) to the
   dependent's start ("startedAt", the claim), p50 and p99 over the runs of
   10,000 children and over `--small` fan-ins of 10 children each; and the
   children's rate with and without the dependent waiting on them (each of them
   decrements the dependent's count, under its row lock).
3. One commit of a one-row UPDATE on the same server (pgbench): what a gap of
   a few milliseconds is worth.
"""

from __future__ import annotations

import argparse
import os
import time

import psycopg2

from bench.common import (
    machine,
    percentile,
    pgbench,
    scratch_database,
    sql,
    start_pool,
    stop_pool,
    wait_tag_completed,
)
from skiplock import queue_core as q
from skiplock.queue_core.database.urls import libpq_dsn

PGBENCH_SCRIPT = "UPDATE bench_commit SET v = v + 1 WHERE id = 1;\n"


def _children(n: int, tag: str) -> list[dict[str, object]]:
    return [{"type": "BENCH_NOOP", "payload": {"tag": tag, "i": i}} for i in range(n)]


def _truncate(url: str) -> None:
    sql(url, 'TRUNCATE "WorkerJob"')


def _enqueue_costs(url: str, n: int, reps: int = 3) -> dict[str, float]:
    plain, with_edges, existing = [], [], []
    for _ in range(reps):
        _truncate(url)
        began = time.perf_counter()
        q.enqueue_many(_children(n, "plain"))
        plain.append(time.perf_counter() - began)
        _truncate(url)
        jobs = _children(n, "fan") + [{"type": "BENCH_NOOP", "payload": {"fan_in": True},
                                       "depends_on": list(range(n))}]
        began = time.perf_counter()
        q.enqueue_many(jobs)
        with_edges.append(time.perf_counter() - began)
        _truncate(url)
        ids = q.enqueue_many(_children(n, "existing"))
        began = time.perf_counter()
        q.enqueue("BENCH_NOOP", {"fan_in": True}, depends_on=ids)
        existing.append(time.perf_counter() - began)
    _truncate(url)
    return {"plain": min(plain), "with_edges": min(with_edges), "existing": min(existing)}


def _wait_done(conn: psycopg2.extensions.connection, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("""SELECT status::text FROM "WorkerJob" WHERE id = %s""", (job_id,))
            if cur.fetchone()[0] == "COMPLETED":
                return
            time.sleep(0.01)
    raise SystemExit(f"job {job_id} did not complete within {timeout:.0f} s")


def _fan_in(conn: psycopg2.extensions.connection, n: int, tag: str,
            dependent: bool = True) -> tuple[float | None, float]:
    """(ms from the last child's completion to the dependent's start, children/s)."""
    jobs = _children(n, tag)
    if dependent:
        jobs.append({"type": "BENCH_NOOP", "payload": {"fan_in": tag},
                     "depends_on": list(range(n))})
    ids = q.enqueue_many(jobs)
    if dependent:
        _wait_done(conn, ids[-1], 600)
    else:
        wait_tag_completed(conn, tag, 600, poll_s=0.02)
    with conn.cursor() as cur:
        cur.execute("""
            SELECT extract(epoch FROM max("completedAt") - min("startedAt")),
                   max("completedAt")
            FROM "WorkerJob" WHERE payload->>'tag' = %s""", (tag,))
        span, last = cur.fetchone()
        gap = None
        if dependent:
            cur.execute("""SELECT extract(epoch FROM "startedAt" - %s) * 1000
                           FROM "WorkerJob" WHERE id = %s""", (last, ids[-1]))
            gap = float(cur.fetchone()[0])
    return gap, n / float(span)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench workflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=10_000,
                        help="children of each large fan-out (default 10000)")
    parser.add_argument("--runs", type=int, default=5, help="large fan-outs (default 5)")
    parser.add_argument("--small", type=int, default=200,
                        help="fan-ins of 10 children each (default 200)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                        help="the pool's children (default: one per CPU)")
    args = parser.parse_args(argv)
    n = args.children

    with scratch_database() as url:
        os.environ["DATABASE_URL"] = url
        print(f"machine: {machine(url)}")
        costs = _enqueue_costs(url, n)
        per_edge = (costs["with_edges"] - costs["plain"]) / n * 1e6
        per_locked = costs["existing"] / n * 1e6
        print(f"\nenqueue_many of {n:,} jobs:                       {costs['plain'] * 1000:8.1f} ms"
              f"  ({costs['plain'] / n * 1e6:.1f} us a job)")
        print(f"  the same and one job depending on all of them:  "
              f"{costs['with_edges'] * 1000:8.1f} ms  ({per_edge:.1f} us an edge)")
        print(f"enqueue of one job depending on {n:,} existing:   "
              f"{costs['existing'] * 1000:8.1f} ms  ({per_locked:.1f} us an edge: each "
              "parent locked and marked)")

        pool = start_pool(url, "--concurrency", str(args.concurrency))
        conn = psycopg2.connect(libpq_dsn(url))
        conn.autocommit = True
        try:
            _fan_in(conn, 100, "warm-up")
            gaps, rates, plain_rates = [], [], []
            for r in range(args.runs):
                _, rate = _fan_in(conn, n, f"plain-{r}", dependent=False)
                plain_rates.append(rate)
                gap, rate = _fan_in(conn, n, f"big-{r}")
                assert gap is not None and gap >= 0, "a dependent started before its parent"
                gaps.append(gap)
                rates.append(rate)
            small = []
            for r in range(args.small):
                gap, _ = _fan_in(conn, 10, f"small-{r}")
                assert gap is not None and gap >= 0, "a dependent started before its parent"
                small.append(gap)
        finally:
            conn.close()
            stop_pool(pool)
        print(f"\nfan-in under a pool of {args.concurrency} (no-op jobs): last child's "
              "completion to the dependent's start")
        print(f"  {args.runs} fan-outs of {n:,}: p50 {percentile(gaps, 0.5):.1f} ms, "
              f"p99 {percentile(gaps, 0.99):.1f} ms (max {max(gaps):.1f})")
        print(f"  {args.small} fan-outs of 10:  p50 {percentile(small, 0.5):.1f} ms, "
              f"p99 {percentile(small, 0.99):.1f} ms (max {max(small):.1f})")
        print(f"  children's rate: {statistics_mean(rates):,.0f} jobs/s with the dependent "
              f"waiting on them, {statistics_mean(plain_rates):,.0f} without")

        sql(url, "CREATE TABLE bench_commit (id int PRIMARY KEY, v int); "
                 "INSERT INTO bench_commit VALUES (1, 0)")
        tps = pgbench(url, PGBENCH_SCRIPT, clients=1, seconds=3)
        print(f"\npgbench, a one-row UPDATE per transaction, 1 client: {tps:,.0f} tps "
              f"({1000 / tps:.2f} ms a commit)")


def statistics_mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
