"""A child's memory after many jobs: resident size after 1,000 and after 100,000.

    python -m bench memory [--first 1000] [--jobs 100000]

A real `skiplock worker --concurrency 1` runs no-op jobs from a scratch
database: `--first` of them, then (the child idle) its resident memory
(VmRSS) is read; then the rest up to `--jobs`, and it is read again. A child
that keeps something per job (a growing list, a cache without bound) shows
here; the target of the speed work is at most 10 % of growth.
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import text

from bench.common import fill, machine, scratch_database, start_pool, stop_pool
from skiplock.queue_core.database import db

POOL_FLAGS = ["--concurrency", "1"]


def _completed() -> int:
    with db.get_engine().connect() as conn:
        return int(conn.execute(text(
            """SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED'""")).scalar_one())


def _wait_completed(total: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while _completed() < total:
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out waiting for the pool")
        time.sleep(0.2)


def _child_rss_kib(master: int) -> int:
    with open(f"/proc/{master}/task/{master}/children") as handle:
        children = [int(pid) for pid in handle.read().split()]
    if len(children) != 1:
        raise SystemExit(f"expected one child of the master, found {children}")
    with open(f"/proc/{children[0]}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS in /proc")


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", type=int, default=1000, help="jobs before the first reading")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs before the second")
    args = parser.parse_args(argv)

    with scratch_database() as url:
        print(f"machine: {machine(url)}")
        fill(args.first, "BENCH_NOOP", {})
        proc = start_pool(url, *POOL_FLAGS)
        try:
            _wait_completed(args.first)
            time.sleep(0.5)  # the last batch's commit and report are done
            first = _child_rss_kib(proc.pid)
            began = time.perf_counter()
            fill(args.jobs - args.first, "BENCH_NOOP", {})
            _wait_completed(args.jobs)
            elapsed = time.perf_counter() - began
            time.sleep(0.5)
            second = _child_rss_kib(proc.pid)
        finally:
            stop_pool(proc)
        print(f"child resident memory after {args.first} jobs: {first / 1024:.1f} MiB; "
              f"after {args.jobs}: {second / 1024:.1f} MiB "
              f"(the {args.jobs - args.first} jobs between took {elapsed:.1f} s with the fill)")
        print(f"after {args.jobs} / after {args.first}: {second / first:.3f} (target <= 1.10)")
