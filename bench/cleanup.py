"""Retention: dropping history partitions against the batched DELETE, in one run.

    python -m bench cleanup [--jobs 1000000] [--days 10] [--shared-server]
    python -m bench cleanup --jobs 10000000            # the issue's ten million (~25 min)

The same finished jobs are made twice, spread over `--days` days that are all
older than the retention (7 days):

1. in history, one partition a day (`skiplock_history_partition`), and removed by
   what `skiplock cleanup` does now: `history.drop_older`, which detaches each
   partition CONCURRENTLY and drops it;
2. in the live part, as they lay in the one table before migration 0022, and
   removed by the batched DELETE that `skiplock cleanup` ran until then
   (`sql.CLEANUP_BATCH`, 5,000 rows a statement, each its own transaction), then
   the VACUUM that makes their space reusable (autovacuum would run it; its time
   is what the server spends after the DELETE).

For each: seconds, jobs per second, the WAL it wrote (pg_current_wal_lsn before and
after: the DELETE writes a record for every row, a drop a few), and the table's size
left behind. Runs on a private cluster with the server's defaults
(bench.common.private_server) unless `--shared-server`.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import psycopg2

from bench.common import machine, private_server, scratch_database
from skiplock.queue_core import sql
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.features import history
from skiplock.queue_core.maintenance import CLEANUP_BATCH_SIZE, FINISHED_STATUSES

RETENTION = timedelta(days=7)
FILL_BATCH = 500_000

# A finished job as the seed's chains write them: a key, a user, a small payload and result,
# finished at `t`, evenly spread over `span` ending 8 days ago. `archived` is the column's
# value: `t` (the day the mover would have taken it: each row lands in its day's partition)
# or 'infinity' (a live row, as every finished job lay before migration 0022).
FILL = """
    INSERT INTO "WorkerJob" (type, payload, status, attempts, "idempotencyKey", "userId",
                             "createdAt", "startedAt", "completedAt", result, "archivedAt")
    SELECT 'DETECT_PATTERNS',
           jsonb_build_object('userId', 'user-' || (g %% 5000), 'eventId', 'event-' || g),
           'COMPLETED', 1, %(prefix)s || g, 'user-' || (g %% 5000),
           t - interval '2 seconds', t - interval '1 second', t,
           '{{"patterns": 3}}'::jsonb, {archived}
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g,
         LATERAL (SELECT now() - %(oldest)s::interval
                         + (g - 1) * %(span)s::interval / %(count)s AS t) AS at
"""


def _fill(cur: psycopg2.extensions.cursor, jobs: int, days: int, *, archived: bool) -> float:
    started = time.monotonic()
    if archived:
        for day in range(days + 1):
            cur.execute("SELECT skiplock_history_partition(now() - %s::interval)",
                        (f"{8 + day} days",))
    statement = FILL.format(archived="t" if archived else "'infinity'")
    prefix = "history-" if archived else "live-"
    for lo in range(1, jobs + 1, FILL_BATCH):
        hi = min(jobs, lo + FILL_BATCH - 1)
        cur.execute(statement, {"prefix": prefix, "lo": lo, "hi": hi, "count": jobs,
                                "oldest": f"{8 + days} days", "span": f"{days} days"})
        print(f"  filled {hi:,} of {jobs:,}", flush=True)
    return time.monotonic() - started


def _wal(cur: psycopg2.extensions.cursor) -> str:
    cur.execute("SELECT pg_current_wal_lsn()")
    return str(cur.fetchone()[0])


def _wal_mb(cur: psycopg2.extensions.cursor, since: str) -> float:
    cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (since,))
    return float(cur.fetchone()[0]) / 1024 / 1024


def _size_mb(cur: psycopg2.extensions.cursor, relation: str) -> float:
    cur.execute("SELECT pg_total_relation_size(%s)", (relation,))
    return float(cur.fetchone()[0]) / 1024 / 1024


def _count(cur: psycopg2.extensions.cursor, relation: str) -> int:
    cur.execute(f"SELECT count(*) FROM {relation}")
    return int(cur.fetchone()[0])


def _history_size_mb(cur: psycopg2.extensions.cursor) -> float:
    cur.execute("""SELECT coalesce(sum(pg_total_relation_size(relid)), 0)
                   FROM pg_partition_tree('"WorkerJobHistory"')""")
    return float(cur.fetchone()[0]) / 1024 / 1024


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cleanup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000,
                        help="finished jobs to remove each way (default 1,000,000)")
    parser.add_argument("--days", type=int, default=10,
                        help="days (history partitions) they are spread over (default 10)")
    parser.add_argument("--shared-server", action="store_true",
                        help="use the development server instead of a private cluster")
    args = parser.parse_args(argv)

    with private_server(not args.shared_server), scratch_database() as url:
        print(f"machine: {machine(url)}")
        conn = psycopg2.connect(libpq_dsn(url))
        conn.autocommit = True
        cur = conn.cursor()

        print(f"history: {args.jobs:,} finished jobs in {args.days + 1} daily partitions")
        fill_s = _fill(cur, args.jobs, args.days, archived=True)
        size_before = _history_size_mb(cur)
        wal = _wal(cur)
        started = time.monotonic()
        done = history.drop_older(RETENTION, ahead=1)
        drop_s = time.monotonic() - started
        drop_wal = _wal_mb(cur, wal)
        left = _count(cur, '"WorkerJobHistory"')
        print(f"  filled in {fill_s:.0f} s; {size_before:,.0f} MiB; dropped "
              f"{len(done.dropped)} partitions in {drop_s:.2f} s, {left} rows left")

        print(f"batched DELETE: the same {args.jobs:,} jobs in the live part")
        fill_s = _fill(cur, args.jobs, args.days, archived=False)
        cur.execute('VACUUM ANALYZE "WorkerJobLive"')
        size_before_live = _size_mb(cur, '"WorkerJobLive"')
        wal = _wal(cur)
        started = time.monotonic()
        statements = 0
        params = {"statuses": list(FINISHED_STATUSES),
                  "older_than_s": RETENTION.total_seconds(), "batch": CLEANUP_BATCH_SIZE}
        with connect(autocommit=True) as c:
            while True:
                deleted = c.execute(sql.CLEANUP_BATCH, params).rowcount
                statements += 1
                if deleted < CLEANUP_BATCH_SIZE:
                    break
                if statements % 100 == 0:
                    print(f"  deleted {statements * CLEANUP_BATCH_SIZE:,}", flush=True)
        delete_s = time.monotonic() - started
        delete_wal = _wal_mb(cur, wal)
        started = time.monotonic()
        cur.execute('VACUUM "WorkerJobLive"')
        vacuum_s = time.monotonic() - started
        vacuum_wal = _wal_mb(cur, wal) - delete_wal
        size_after_live = _size_mb(cur, '"WorkerJobLive"')
        left = _count(cur, '"WorkerJobLive"')
        print(f"  filled in {fill_s:.0f} s; {size_before_live:,.0f} MiB; {statements} "
              f"DELETE statements in {delete_s:.1f} s, VACUUM {vacuum_s:.1f} s, {left} rows "
              f"left, table still {size_after_live:,.0f} MiB")
        conn.close()

    jobs = args.jobs
    print()
    print(f"cleanup of {jobs:,} finished jobs ({args.days} days older than 7)")
    print(f"{'':<34}{'seconds':>10}{'jobs/s':>14}{'WAL MiB':>10}")
    print(f"{'drop history partitions':<34}{drop_s:>10.2f}{jobs / drop_s:>14,.0f}"
          f"{drop_wal:>10.1f}")
    print(f"{'batched DELETE (until 0022)':<34}{delete_s:>10.1f}{jobs / delete_s:>14,.0f}"
          f"{delete_wal:>10.1f}")
    print(f"{'  + VACUUM after it':<34}{vacuum_s:>10.1f}{'':>14}{vacuum_wal:>10.1f}")
    print(f"the drop took {drop_s / (delete_s + vacuum_s):.4f} of the DELETE and VACUUM "
          f"({(delete_s + vacuum_s) / drop_s:,.0f}x faster); the DELETE left the table at "
          f"{size_after_live:,.0f} MiB (was {size_before_live:,.0f}), the drop gave back "
          f"{size_before:,.0f} MiB to the file system")
