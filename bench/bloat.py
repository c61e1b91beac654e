"""Bloat under churn: the job table's size and dead rows while a pool runs at 80 %.

    python -m bench bloat [--minutes 10] [--share 0.8] [--plot docs/bloat.png]
    python -m bench bloat --hold-xmin [--minutes 4] ...   (bench/bloat_hold.py)

A real `skiplock worker --concurrency 2` runs no-op jobs. First its maximum
rate is measured on a backlog; then a producer enqueues at `--share` of that
rate, in batches ten times a second, for `--minutes`, while the pool keeps
up. Finished jobs are deleted as an operator's cron would
(`skiplock cleanup --older-than 1m`, every minute). autovacuum runs with the
server's defaults and the table's own settings (migration 0001: fillfactor
85, scale factors 0.02 / 0.05), on a private cluster made for the run
(`--shared-server` to use the development server instead). Every 5 s the table's heap size, its index
sizes and its live and dead row estimates are sampled; they must level off.
The samples go to a CSV; `--plot` draws them with matplotlib from the
bench-only virtualenv (`make bench-venv`), never a dependency of the project.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import time
from pathlib import Path

import psycopg2

from bench.common import fill, machine, private_server, scratch_database, start_pool, stop_pool
from skiplock import queue_core as q
from skiplock.queue_core.database.urls import libpq_dsn

HERE = Path(__file__).resolve().parent
POOL_FLAGS = ["--concurrency", "2"]
# The live part of "WorkerJob" (partitioned since migration 0022_history: the root has
# no storage and no statistics), the hot table whose bloat this measures.
SAMPLE = """
    SELECT pg_relation_size('"WorkerJobLive"'), pg_indexes_size('"WorkerJobLive"'),
           n_live_tup, n_dead_tup, autovacuum_count,
           (SELECT count(*) FROM "WorkerJob" WHERE status = 'PENDING')
    FROM pg_stat_user_tables WHERE relid = '"WorkerJobLive"'::regclass
"""


def max_rate(url: str, cur: psycopg2.extensions.cursor, jobs: int) -> float:
    fill(jobs, "BENCH_NOOP", {})
    proc = start_pool(url, *POOL_FLAGS)
    try:
        deadline = time.monotonic() + 300
        while True:
            cur.execute("""SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED'""")
            if cur.fetchone()[0] >= jobs:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the pool did not drain the backlog in 5 minutes")
            time.sleep(0.2)
    finally:
        stop_pool(proc)
    cur.execute("""SELECT EXTRACT(EPOCH FROM max("completedAt") - min("startedAt"))
                   FROM "WorkerJob" """)
    rate = jobs / float(cur.fetchone()[0])
    cur.execute('TRUNCATE "WorkerJob"')
    return rate


def run(argv: list[str]) -> None:
    if "--hold-xmin" in argv:
        from bench import bloat_hold  # the same churn beside a held transaction

        bloat_hold.run(argv)
        return
    parser = argparse.ArgumentParser(prog="python -m bench bloat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="length of the run (default 10)")
    parser.add_argument("--share", type=float, default=0.8,
                        help="share of the measured maximum rate to enqueue at (default 0.8)")
    parser.add_argument("--csv", default=str(HERE / "results" / "bloat.csv"),
                        help="where the samples go (default bench/results/bloat.csv)")
    parser.add_argument("--shared-server", action="store_true",
                        help="use the development server instead of a private cluster with "
                             "default settings (whose autovacuum may be tuned or off)")
    parser.add_argument("--plot", default=None,
                        help="draw the samples into this PNG with the bench-only virtualenv")
    parser.add_argument("--peer-python", default=str(HERE.parent / ".bench-venv/bin/python"),
                        help="Python that has matplotlib (default .bench-venv/bin/python)")
    args = parser.parse_args(argv)

    with private_server(not args.shared_server), scratch_database() as url:
        print(f"machine: {machine(url)}; load average {os.getloadavg()[0]:.2f} at the start")
        conn = psycopg2.connect(libpq_dsn(url))
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT current_setting('autovacuum'), current_setting('autovacuum_naptime')")
        autovacuum, naptime = cur.fetchone()
        print(f"autovacuum {autovacuum}, autovacuum_naptime {naptime}")
        peak = max_rate(url, cur, 20_000)
        target = peak * args.share
        print(f"maximum rate {peak:.0f} jobs/s (2 children, 20000 no-op jobs); "
              f"enqueueing at {target:.0f} jobs/s for {args.minutes:g} min")
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = start_pool(url, *POOL_FLAGS)
        rows: list[list[float]] = []
        began = time.monotonic()
        next_sample = next_cleanup = began
        owed = 0.0
        enqueued = 0
        try:
            tick = began
            while (now := time.monotonic()) - began < args.minutes * 60:
                owed += target * (now - tick)
                tick = now
                batch = int(owed)
                if batch:
                    q.enqueue_many([{"type": "BENCH_NOOP", "payload": {}}] * batch)
                    owed -= batch
                    enqueued += batch
                if now >= next_cleanup and now - began >= 60:
                    q.cleanup(60)  # what `skiplock cleanup --older-than 1m` does
                    next_cleanup = now + 60
                if now >= next_sample:
                    cur.execute(SAMPLE)
                    heap, indexes, live, dead, vacuums, pending = cur.fetchone()
                    rows.append([round(now - began, 1), heap, indexes, live, dead, vacuums,
                                 pending])
                    next_sample = now + 5
                time.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
        finally:
            stop_pool(proc)
            conn.close()
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["seconds", "heap_bytes", "index_bytes", "live_rows", "dead_rows",
                             "autovacuums", "pending"])
            writer.writerows(rows)
        print(f"enqueued {enqueued} jobs ({enqueued / (args.minutes * 60):.0f}/s); "
              f"{len(rows)} samples in {out}")
        third = max(1, len(rows) // 3)
        for label, part in (("first third", rows[:third]), ("last third", rows[-third:])):
            heap = max(r[1] for r in part) / 2**20
            index = max(r[2] for r in part) / 2**20
            dead = max(r[4] for r in part)
            pending = max(r[6] for r in part)
            print(f"{label:<12} max heap {heap:7.1f} MiB, indexes {index:7.1f} MiB, "
                  f"dead rows {dead:8.0f}, pending {pending:6.0f}")
        if args.plot:
            subprocess.run([args.peer_python, str(HERE / "plot_bloat.py"), str(out), args.plot,
                            f"{target:.0f} jobs/s ({args.share:.0%} of {peak:.0f}), "
                            f"{args.minutes:g} min"], check=True)
            print(f"plot: {args.plot}")
