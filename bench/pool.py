"""The pool end to end: throughput, pick-up latency, and CPU scaling.

    python -m bench pool [--jobs 5000] [--concurrency 1,2] [--cpu-ms 20]

A real `skiplock worker` runs against a scratch database. Times come from the
database clock: throughput is jobs / (last completedAt - first startedAt);
latency is startedAt - createdAt of jobs enqueued one by one into an idle pool.
The reference is pgbench on the same server, the 1-row UPDATE rate with as
many clients: one commit per job would make it the ceiling for no-op jobs;
with group commit and the adaptive claim (batch "auto") a child commits once
per group of jobs, and the ratio goes above 100 %.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from sqlalchemy import text

from bench.common import (
    fill,
    machine,
    percentile,
    pgbench,
    scratch_database,
    sql,
    start_pool,
    stop_pool,
)
from skiplock import queue_core as q
from skiplock.queue_core.database import db


def _scalar(statement: str, **params: Any) -> Any:
    with db.get_engine().begin() as conn:
        return conn.execute(text(statement), params).scalar()


def _wait_done(total: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while _scalar("""SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED'""") < total:
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out waiting for the pool")
        time.sleep(0.05)


def _rate(total: int) -> float:
    span = _scalar("""SELECT EXTRACT(EPOCH FROM max("completedAt") - min("startedAt"))
                      FROM "WorkerJob" WHERE status = 'COMPLETED'""")
    return total / float(span)


def _throughput(url: str, job_type: str, payload: dict[str, Any], total: int,
                *flags: str) -> float:
    sql(url, 'TRUNCATE "WorkerJob"')
    fill(total, job_type, payload)
    proc = start_pool(url, *flags)
    try:
        _wait_done(total)
    finally:
        stop_pool(proc)
    return _rate(total)


def _latency(url: str, count: int, *flags: str) -> tuple[float, float]:
    sql(url, 'TRUNCATE "WorkerJob"')
    proc = start_pool(url, "--concurrency", "2", *flags)
    try:
        q.enqueue("BENCH_NOOP", {})  # the pool is up once this runs
        _wait_done(1, timeout=60)
        time.sleep(3)  # idle long enough for polling to back off to its maximum
        for _ in range(count):
            q.enqueue("BENCH_NOOP", {})
            time.sleep(0.1)
        _wait_done(count + 1, timeout=120)
    finally:
        stop_pool(proc)
    with db.get_engine().begin() as conn:
        waits = [float(r[0]) * 1000 for r in conn.execute(text(
            """SELECT EXTRACT(EPOCH FROM "startedAt" - "createdAt") FROM "WorkerJob"
               ORDER BY "createdAt" OFFSET 1"""))]
    return percentile(waits, 0.5), percentile(waits, 0.99)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench pool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per run (default 5000)")
    parser.add_argument("--concurrency", default="1,2",
                        help="comma-separated children counts (default 1,2)")
    parser.add_argument("--cpu-ms", type=int, default=20,
                        help="CPU time of each CPU-bound job in ms (default 20)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    with scratch_database() as url:
        print(f"machine: {machine(url)}")
        sql(url, "CREATE TABLE bench_ref (id int PRIMARY KEY, n int NOT NULL)")
        sql(url, "INSERT INTO bench_ref SELECT g, 0 FROM generate_series(1, 100000) g")
        update = "\\set id random(1, 100000)\nUPDATE bench_ref SET n = n + 1 WHERE id = :id;\n"

        print(f"\nno-op jobs ({args.jobs} per run)")
        print(f"{'children':>8} {'batch':>6} {'jobs/s':>9} {'pgbench UPDATE tps':>20} "
              f"{'jobs/s / tps':>13}")
        for n in levels:
            tps = pgbench(url, update, clients=n, seconds=5)
            for batch in (0, 1, 10):  # 0: the adaptive default
                rate = _throughput(url, "BENCH_NOOP", {}, args.jobs, "--concurrency", str(n),
                                   "--batch-size", str(batch))
                label = str(batch) if batch else "auto"
                print(f"{n:>8} {label:>6} {rate:>9.0f} {tps:>20.0f} {rate / tps:>12.0%}")

        cpu_jobs = max(50, 4000 // args.cpu_ms)
        print(f"\nCPU-bound jobs ({cpu_jobs} x {args.cpu_ms} ms of pure Python)")
        base = None
        for n in levels:
            rate = _throughput(url, "BENCH_CPU", {"ms": args.cpu_ms}, cpu_jobs,
                               "--concurrency", str(n))
            base = base or rate
            ideal = 1000 / args.cpu_ms * n
            print(f"{n:>8} children: {rate:7.1f} jobs/s  ({rate / base:.2f}x of 1 child; "
                  f"{rate / ideal:.0%} of {ideal:.0f} jobs/s if the queue cost nothing)")

        print("\npick-up latency of a job enqueued into an idle pool (startedAt - createdAt)")
        for label, flags in (("LISTEN/NOTIFY", ()), ("polling only (--no-listen)", ("--no-listen",))):
            p50, p99 = _latency(url, 100, *flags)
            print(f"  {label:<28} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
