"""History (migration 0022_history): what moving finished jobs costs the pool, both ways,
and the hot table over a compressed week of churn.

    python -m bench history [--jobs 60000] [--rounds 3] [--week-minutes 0] [--hold FROM:TO]

Throughput of no-op jobs, 2 children, with 7 history partitions present, three ways,
interleaved in each round (the machine is shared: compare within a run):

- `none`: nothing moves (`skiplock.history_after` set to 1000 days: the mover's pass
  finds nothing), main's behaviour;
- `mover`: the pool masters' mover with a hot retention of 0 (every finished job moves,
  in batches, every few seconds, or 0.1 s after a full batch);
- `completion`: the completion itself moves the row (`"archivedAt" = now()` in the
  completing UPDATE, on the root: a DELETE from the live part and an INSERT into
  history in the hot statement). Not shipped; the statements are patched in the pool's
  processes for this case.

Each run prints jobs/s, its ratio to `none` in the same round, and how many jobs were
still in the live part when the last one completed (the mover's first pass comes a few
seconds into a run: use enough jobs for runs of 10 s or more). The rounds rotate the
order of the cases.

Cleanup of finished jobs, partition drop against the batched DELETE: `python -m bench
cleanup` (bench/cleanup.py).

With `--week-minutes M`, a compressed week, on a private cluster (autovacuum on, as a
real server has it): partitions of 1 minute
(`skiplock.history_width`), retention of 7 minutes, a producer enqueuing at a steady
rate into a pool for M minutes, the mover at its default (60 s) and `skiplock cleanup
--older-than 7m` every minute. Every 30 s: the live part's size and rows, the history's
partitions and rows. The live part must level off, and the history must stop growing
after 7 minutes. `--hold FROM:TO` holds a REPEATABLE READ snapshot (a long transaction)
from minute FROM to minute TO of the week: the live part grows while it is held (vacuum
may remove nothing it could see) and must level off again once it ends; cleanup's
detach of old partitions waits for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

import psycopg2
from sqlalchemy import text

from bench.common import fill, machine, private_server, scratch_database, sql, stop_pool
from skiplock import queue_core as q
from skiplock.queue_core.database import db
from skiplock.queue_core.database.urls import libpq_dsn

_CASES = ("none", "mover", "completion")
_AFTER = {"none": "1000 days", "mover": "0", "completion": "1000 days"}


def _scalar(statement: str, **params: Any) -> Any:
    with db.get_engine().begin() as conn:
        return conn.execute(text(statement), params).scalar()


def _start_pool(url: str, case: str, children: int) -> Any:
    import os
    import subprocess

    from bench.common import WORKER_FLAGS

    code = ("import sys, bench.history as h; h.moving_at_completion(); "
            "from skiplock.cli import main; main(sys.argv[1:])") if case == "completion" else (
        "import sys; from skiplock.cli import main; main(sys.argv[1:])")
    return subprocess.Popen([sys.executable, "-c", code, "worker", *WORKER_FLAGS,
                             "--concurrency", str(children)],
                            env={**os.environ, "DATABASE_URL": url}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def moving_at_completion() -> None:
    """The completion statements of this process (and the children it forks), made to
    move the job to history as they complete it."""
    from skiplock.queue_core import sql as statements

    def moved(statement: Any) -> Any:
        source = statement.text.replace(
            'UPDATE "WorkerJobLive" AS j\n    SET status = \'COMPLETED\',',
            'UPDATE "WorkerJob" AS j\n    SET "archivedAt" = statement_timestamp(), '
            "status = 'COMPLETED',").replace(
            "WHERE j.id = c.id AND j.status = 'PROCESSING'",
            "WHERE j.id = c.id AND j.\"archivedAt\" = 'infinity' AND j.status = 'PROCESSING'")
        source = source.replace(
            'UPDATE "WorkerJobLive"\n    SET status = \'COMPLETED\',',
            'UPDATE "WorkerJob"\n    SET "archivedAt" = statement_timestamp(), '
            "status = 'COMPLETED',")
        assert source != statement.text, "the completion statement changed: update the bench"
        return text(source)

    for name in ("COMPLETE", "COMPLETE_MANY", "COMPLETE_MANY_NO_FLUSH", "COMPLETE_AND_CLAIM",
                 "COMPLETE_AND_CLAIM_TYPES"):
        setattr(statements, name, moved(getattr(statements, name)))


def _past_partitions(days: int) -> None:
    for d in range(1, days + 1):
        _scalar("SELECT skiplock_history_partition(now() - make_interval(days => :d))", d=d)
    _scalar("SELECT count(*) FROM generate_series(0, 3) AS k, "
            "LATERAL skiplock_history_partition(now() + k * skiplock_history_width())")


def _throughput(url: str, case: str, total: int, children: int) -> tuple[float, int]:
    sql(url, 'TRUNCATE "WorkerJob"')
    database = _scalar("SELECT current_database()")
    sql(url, f'ALTER DATABASE "{database}" SET skiplock.history_after = \'{_AFTER[case]}\'')
    fill(total, "BENCH_NOOP", {})
    db.reset_engine()
    proc = _start_pool(url, case, children)
    live_at_end = 0
    try:
        deadline = time.monotonic() + 600
        while _scalar("""SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED'""") < total:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the pool of case {case} did not complete the jobs")
            time.sleep(0.05)
        live_at_end = int(_scalar('SELECT count(*) FROM "WorkerJobLive"'))
    finally:
        stop_pool(proc)
    span = _scalar("""SELECT EXTRACT(EPOCH FROM max("completedAt") - min("startedAt"))
                      FROM "WorkerJob" WHERE status = 'COMPLETED'""")
    return total / float(span), live_at_end


def _week(url: str, minutes: float, hold: tuple[float, float] | None = None) -> None:
    database = _scalar("SELECT current_database()")
    sql(url, 'TRUNCATE "WorkerJob"')
    for setting, value in (("history_width", "1 minute"), ("history_after", "60 seconds")):
        sql(url, f'ALTER DATABASE "{database}" SET skiplock.{setting} = \'{value}\'')
    # The partitions of a day that the migration made would take every row: gone (empty).
    with db.get_engine().begin() as conn:
        for (name,) in conn.execute(text("SELECT name FROM skiplock_history_partitions()")):
            conn.execute(text(f'DROP TABLE "{name}"'))
    db.reset_engine()
    proc = _start_pool(url, "none", 2)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            q.enqueue_many([{"type": "BENCH_NOOP", "payload": {}} for _ in range(200)])
            time.sleep(0.1)  # about 2,000 jobs a second

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    start = time.monotonic()
    next_cleanup = start + 60
    # Cleanup on a thread of its own: with a snapshot held, its DETACH ... CONCURRENTLY
    # waits for the snapshot's transaction to end (it must, to drop the partition).
    cleaning: threading.Thread | None = None
    holder: Any = None
    print(f"\ncompressed week: partitions of 1 minute, retention 7 minutes, {minutes:g} min"
          + (f"; a REPEATABLE READ snapshot held from minute {hold[0]:g} to {hold[1]:g}"
             if hold else ""))
    print(f"{'min':>5} {'live rows':>10} {'live MiB':>9} {'history rows':>13} {'partitions':>11} "
          f"{'completed':>10} {'held':>5} {'cleanup':>8}")
    try:
        while time.monotonic() - start < minutes * 60:
            time.sleep(30)
            elapsed_min = (time.monotonic() - start) / 60
            if hold and holder is None and hold[0] <= elapsed_min < hold[1]:
                holder = psycopg2.connect(libpq_dsn(url))
                holder.set_session(isolation_level="REPEATABLE READ")
                holder.cursor().execute('SELECT 1 FROM "WorkerJob" LIMIT 1')
            elif holder is not None and hold and elapsed_min >= hold[1]:
                holder.rollback()
                holder.close()
                holder = None
            if time.monotonic() >= next_cleanup and (cleaning is None or not cleaning.is_alive()):
                cleaning = threading.Thread(target=q.cleanup, args=("7m",), daemon=True)
                cleaning.start()
                next_cleanup = time.monotonic() + 60
            row = _row("""SELECT (SELECT count(*) FROM "WorkerJobLive") AS live,
                                 pg_total_relation_size('"WorkerJobLive"') AS live_bytes,
                                 (SELECT count(*) FROM "WorkerJobHistory") AS history,
                                 (SELECT count(*) FROM skiplock_history_partitions()) AS parts,
                                 (SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED')
                                   AS done""")
            waiting = cleaning is not None and cleaning.is_alive()
            print(f"{(time.monotonic() - start) / 60:>5.1f} {row.live:>10} "
                  f"{row.live_bytes / 2**20:>9.1f} {row.history:>13} {row.parts:>11} "
                  f"{row.done:>10} {'yes' if holder is not None else '':>5} "
                  f"{'running' if waiting else '':>8}", flush=True)
    finally:
        if holder is not None:
            holder.close()
        if cleaning is not None:
            cleaning.join(60)
        stop.set()
        producer.join()
        stop_pool(proc)


def _row(statement: str) -> Any:
    with db.get_engine().begin() as conn:
        return conn.execute(text(statement)).one()


def _cases(url: str, jobs: int, rounds: int, children: int) -> None:
    print(f"\nno-op jobs ({jobs} per run, {children} children), 7 history partitions present")
    print(f"{'round':>5} {'case':>11} {'jobs/s':>9} {'/ none':>7} {'live at end':>12}")
    rates: dict[str, list[float]] = {case: [] for case in _CASES}
    for n in range(1, rounds + 1):
        # Each round in another order: the machine's load drifts within a run.
        order = _CASES[n % 3:] + _CASES[:n % 3]
        found = {case: _throughput(url, case, jobs, children) for case in order}
        for case in order:
            rate, live = found[case]
            rates[case].append(rate)
            print(f"{n:>5} {case:>11} {rate:>9.0f} {rate / found['none'][0]:>7.2f} "
                  f"{live:>12}", flush=True)
    median = {case: statistics.median(r) for case, r in rates.items()}
    print("median: " + ", ".join(f"{case} {median[case]:.0f} jobs/s "
                                  f"({median[case] / median['none']:.2f})" for case in _CASES))


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench history", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=60000, help="no-op jobs per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three cases")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--week-minutes", type=float, default=0,
                        help="run the compressed week for this many minutes (0: not)")
    parser.add_argument("--hold", default=None, metavar="FROM:TO",
                        help="in the compressed week, hold a REPEATABLE READ snapshot from "
                             "minute FROM to minute TO (say 4:6, two days of the week)")
    args = parser.parse_args(argv)
    if args.jobs:
        with scratch_database() as url:
            print(f"machine: {machine(url)}")
            _past_partitions(7)
            _cases(url, args.jobs, args.rounds, args.children)
    if args.week_minutes:
        # On a cluster of its own: autovacuum at its defaults (the shared server's may be
        # off), which the live part's size depends on.
        with private_server(), scratch_database() as url:
            print(f"machine: {machine(url)} (a private cluster)")
            hold = None
            if args.hold:
                begin, end = (float(part) for part in args.hold.split(":"))
                hold = (begin, end)
            _week(url, args.week_minutes, hold)
