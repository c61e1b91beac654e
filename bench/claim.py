"""Claim and complete: latency against a deep backlog, throughput with N claimers.

    python -m bench claim [--backlog 1000000] [--small 1000] [--jobs 20000] [--clients 1,2,4]
                          [--keys 1000] [--unserved 0,10000,100000] [--cases routing,...]

The claim's latency is measured at `--small` pending jobs and again at
`--backlog`; their ratio is a target of the speed work (at most 1.3). It is
measured once more on the same backlog spread over `--keys` concurrency keys
(limit 2 each) of which one key holds half the jobs (a backfill): what limits
cost the claim (nothing: held-back jobs are outside its index) and the
completion (its trigger frees the slot and lets the key's next job in).

Routing (`--unserved`): a pool claims only the types it serves, so jobs of a
type that no pool serves are never taken and sit, oldest, at the front of the
claim's index. The claim of a pool child (its served types, its pool's share)
is timed with that many such jobs ahead of the served ones, before and after
parking takes them out of the index (queue_core/features/parking.py), with the cost of
a parking pass, of putting them back, and of the probe every master makes
when nothing is parked. Unparked is also what a pool pays beside another
deployment whose types are served (and so never parked) and whose ready
backlog sits ahead of its own.

Each job costs two transactions (the claim, then the fenced completion), so
the reference is pgbench running a one-row UPDATE by primary key per
transaction on the same server with the same number of clients: the queue
cannot beat half that rate, and the closer it gets, the less it wastes.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import time

from sqlalchemy import Engine, create_engine

from bench.common import fill, machine, mean, percentile, pgbench, scratch_database, sql
from skiplock import queue_core as q
from skiplock.queue_core.database import db, scratch


def _drain(args: tuple[str, int]) -> tuple[int, float]:
    worker, quota = args
    db.reset_engine()
    done = 0
    began = time.perf_counter()
    while done < quota:
        jobs = q.claim(worker)
        if not jobs:
            break
        for job in jobs:
            q.complete(job)
            done += 1
    return done, time.perf_counter() - began


def _latency(engines: list[Engine], samples: int) -> list[tuple[list[float], list[float]]]:
    """Milliseconds of `samples` claims of one job, and of their completions, in each
    database in turn: both figures see the same moments of a shared machine."""
    conns = [engine.connect().execution_options(isolation_level="AUTOCOMMIT")
             for engine in engines]
    figures: list[tuple[list[float], list[float]]] = [([], []) for _ in engines]
    for i in range(samples + 20):
        for conn, (claim_ms, complete_ms) in zip(conns, figures, strict=True):
            t0 = time.perf_counter()
            [job] = q.claim("latency", conn=conn)
            t1 = time.perf_counter()
            q.complete(job, conn=conn)
            t2 = time.perf_counter()
            if i >= 20:  # warm-up
                claim_ms.append((t1 - t0) * 1000)
                complete_ms.append((t2 - t1) * 1000)
    for conn in conns:
        conn.close()
    return figures


def latency(label: str, backlog: int) -> None:
    claim_ms, complete_ms = [], []
    for i in range(min(2000, backlog // 2)):
        t0 = time.perf_counter()
        [job] = q.claim("latency")
        t1 = time.perf_counter()
        q.complete(job)
        t2 = time.perf_counter()
        if i >= 20:  # warm-up
            claim_ms.append((t1 - t0) * 1000)
            complete_ms.append((t2 - t1) * 1000)
    print(f"{label}: claim p50 {percentile(claim_ms, .5):.2f} ms, "
          f"p99 {percentile(claim_ms, .99):.2f} ms; complete p50 "
          f"{percentile(complete_ms, .5):.2f} ms (mean {mean(complete_ms):.2f})")


def fill_keyed(count: int, keys: int, batch: int = 10_000) -> None:
    """Half the jobs on one key (a backfill), the rest spread over the other keys."""
    began = time.perf_counter()
    for start in range(0, count, batch):
        q.enqueue_many([{"type": "BENCH", "payload": {},
                         "concurrency_key": "key0" if i % 2 else f"key{(i // 2) % keys}",
                         "concurrency": 2} for i in range(start, min(start + batch, count))])
    sql(os.environ["DATABASE_URL"], 'VACUUM ANALYZE "WorkerJob"')
    print(f"keyed backlog: {count} jobs over {keys} keys (filled in "
          f"{time.perf_counter() - began:.1f} s)")


def routing(url: str, unserved: int, served: int = 2000, samples: int = 500) -> None:
    """The claim of a pool child serving BENCH, with `unserved` older jobs of a type
    nobody serves ahead of `served` BENCH jobs, before and after they are parked."""
    from skiplock.queue_core.features import parking

    logging.getLogger("skiplock.routing").setLevel(logging.ERROR)  # a line per pass otherwise
    sql(url, 'TRUNCATE "WorkerJob", "WorkerProcess"')
    fill(unserved, "UNSERVED", {})
    fill(served, "BENCH", {})

    def claims(label: str, types: tuple[str, ...] | None = ("BENCH",)) -> None:
        ms = []
        for i in range(samples + 20):
            t0 = time.perf_counter()
            jobs = q.claim("routing", types=types, children=2)
            t1 = time.perf_counter()
            for job in jobs:
                q.complete(job)
            if i >= 20:  # warm-up
                ms.append((t1 - t0) * 1000)
        print(f"  {label}: claim p50 {percentile(ms, .5):.2f} ms, "
              f"p99 {percentile(ms, .99):.2f} ms")
        fill(samples + 20, "BENCH", {})  # as many served jobs again for the next figure

    print(f"routing: {unserved} pending jobs of a type no pool serves, ahead of {served} "
          "served ones (claims of one job, types=[BENCH], a share of 2 children)")
    if not unserved:  # what the type filter itself costs a claim
        claims("without a type filter (as before routing)", types=None)
    claims("unparked (also: another deployment's served backlog ahead)")
    passes, began = 0, time.perf_counter()
    while parking.park_unserved(["BENCH"], live_s=60, grace_s=0):
        passes += 1
    if passes:
        print(f"  parked in {passes} passes of {parking.PARK_WINDOW}: "
              f"{(time.perf_counter() - began) / passes * 1000:.1f} ms a pass")
    began = time.perf_counter()
    parking.park_unserved(["BENCH"], live_s=60, grace_s=0)
    print(f"  a parking pass that finds nothing: {(time.perf_counter() - began) * 1000:.1f} ms")
    sql(url, 'VACUUM ANALYZE "WorkerJob"')
    claims("parked")
    empty = []
    for _ in range(200):
        t0 = time.perf_counter()
        parking.unpark(["BENCH"])
        empty.append((time.perf_counter() - t0) * 1000)
    print(f"  a master's probe for parked jobs of its types, none there: "
          f"p50 {percentile(empty, .5):.2f} ms")
    passes, began = 0, time.perf_counter()
    while parking.unpark(["UNSERVED"]):
        passes += 1
    if passes:
        print(f"  put back in {passes} passes of {parking.UNPARK_BATCH}: "
              f"{(time.perf_counter() - began) / passes * 1000:.1f} ms a pass")


def routing_statistics(url: str, backlog: int = 100_000) -> None:
    """The claim's type filter given as constants, as the planner would see them, beside
    the InitPlan the claim uses (queue_core/sql.py `_TYPES`), when a served type's
    backlog grew since the table was last analyzed."""
    import psycopg2

    from skiplock.queue_core import sql as statements
    from skiplock.queue_core.database.db import driver_sql
    from skiplock.queue_core.database.urls import libpq_dsn
    from skiplock.queue_core.features import parking
    from skiplock.queue_core.lifecycle import types_param

    logging.getLogger("skiplock.routing").setLevel(logging.ERROR)
    sql(url, 'TRUNCATE "WorkerJob", "WorkerProcess"')
    sql(url, 'ALTER TABLE "WorkerJobLive" SET (autovacuum_enabled = off)')
    try:
        fill(backlog, "UNSERVED", {})
        while parking.park_unserved(["BENCH"], live_s=60, grace_s=0):
            pass
        fill(100, "BENCH", {})  # analyzed: BENCH looks rare
        for start in range(0, backlog, 10_000):  # not analyzed: it is not
            q.enqueue_many([{"type": "BENCH", "payload": {}}
                            for _ in range(min(10_000, backlog - start))])
        constant = driver_sql(statements.CLAIM_TYPES).replace(
            "ANY(CAST((SELECT CAST(%(types)s AS text[])) AS text[]))",
            "ANY(CAST(%(types)s AS text[]))")
        conn = psycopg2.connect(libpq_dsn(url))
        conn.autocommit = True
        params = {"worker_id": "w", "limit": 1, "children": 2, "types": types_param(["BENCH"])}
        print(f"routing: {backlog} BENCH jobs enqueued since the last ANALYZE, which saw 100 "
              f"(and {backlog} parked jobs of a type no pool serves)")
        for label, statement in (("the types as an InitPlan (the claim)",
                                  driver_sql(statements.CLAIM_TYPES)),
                                 ("the types as constants", constant)):
            ms = []
            with conn.cursor() as cur:
                for _ in range(25):
                    t0 = time.perf_counter()
                    cur.execute(statement, params)
                    cur.fetchall()
                    ms.append((time.perf_counter() - t0) * 1000)
            print(f"  {label}: claim p50 {percentile(ms[5:], .5):.2f} ms")
        conn.close()
    finally:
        sql(url, 'ALTER TABLE "WorkerJobLive" RESET (autovacuum_enabled)')


def _past_partitions(url: str, days: int) -> None:
    """History partitions of the `days` past days, as a week of history leaves them: the
    hot statements must lock none of them."""
    if days:
        sql(url, "SELECT skiplock_history_partition(now() - make_interval(days => d)) "
                 f"FROM generate_series(1, {days}) AS d")
        print(f"history: {days} partitions of past days")


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench claim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=200_000,
                        help="pending jobs in the table while measuring (default 200000)")
    parser.add_argument("--small", type=int, default=1000,
                        help="pending jobs of the first latency measurement (default 1000)")
    parser.add_argument("--jobs", type=int, default=10_000,
                        help="jobs claimed and completed per throughput run (default 10000)")
    parser.add_argument("--clients", default="1,2,4",
                        help="comma-separated claimer counts (default 1,2,4)")
    parser.add_argument("--keys", type=int, default=1000,
                        help="concurrency keys of the keyed backlog (default 1000)")
    parser.add_argument("--unserved", default="0,10000,100000",
                        help="comma-separated counts of jobs no pool serves, ahead of the "
                             "served ones, for the routing case (default 0,10000,100000)")
    parser.add_argument("--history", type=int, default=7,
                        help="history partitions of past days in each database (migration "
                             "0022_history: a week's; 0 on an older revision)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated cases to run (default {','.join(CASES)})")
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    cases = set(args.cases.split(","))
    if not cases <= set(CASES):
        raise SystemExit(f"unknown cases {sorted(cases - set(CASES))}; choose from {CASES}")
    if "latency" not in cases:
        with scratch_database() as url:
            print(f"machine: {machine(url)}")
            _past_partitions(url, args.history)
            _other_cases(url, args, cases, clients)
        return

    # Two queues on the same server: --small pending jobs, and --backlog. Claims
    # alternate between them, so that a busy moment of the machine hits both.
    samples = min(2000, args.small // 2, args.backlog // 2)
    with scratch.scratch_database("skiplock_bench_small") as small_url:
        _past_partitions(small_url, args.history)
        fill(args.small, "BENCH", {})
        with scratch_database() as url:
            print(f"machine: {machine(url)}")
            _past_partitions(url, args.history)
            began = time.perf_counter()
            fill(args.backlog, "BENCH", {})
            print(f"backlog: {args.backlog} pending jobs "
                  f"(filled in {time.perf_counter() - began:.1f} s)")
            small_engine, big_engine = create_engine(small_url), create_engine(url)
            small, big = _latency([small_engine, big_engine], samples)
            small_engine.dispose()
            big_engine.dispose()
            claim_ms, complete_ms = big
            print(f"claim latency at that backlog: p50 {percentile(claim_ms, .5):.2f} ms, "
                  f"p99 {percentile(claim_ms, .99):.2f} ms; complete: p50 "
                  f"{percentile(complete_ms, .5):.2f} ms (mean {mean(complete_ms):.2f})")
            ratio = percentile(claim_ms, .5) / percentile(small[0], .5)
            print(f"claim latency at {args.small} pending, in turn with it: p50 "
                  f"{percentile(small[0], .5):.2f} ms, p99 {percentile(small[0], .99):.2f} ms; "
                  f"p50 at {args.backlog} / at {args.small}: {ratio:.2f} (target <= 1.3)")
            _other_cases(url, args, cases, clients)


CASES = ("latency", "limits", "routing", "throughput")


def _other_cases(url: str, args: argparse.Namespace, cases: set[str], clients: list[int]) -> None:
    if "limits" in cases:
        sql(url, 'TRUNCATE "WorkerJob", "WorkerConcurrencyKey"')
        fill_keyed(args.backlog, args.keys)
        latency(f"limits ({args.keys} keys, limit 2)", args.backlog)
    if "routing" in cases:
        for count in (int(n) for n in args.unserved.split(",") if n.strip()):
            routing(url, count)
        routing_statistics(url)
    if "throughput" in cases:
        sql(url, 'TRUNCATE "WorkerJob", "WorkerConcurrencyKey"')
        fill(args.backlog, "BENCH", {})
        _throughput(url, args.jobs, clients)


def _throughput(url: str, jobs: int, clients: list[int]) -> None:
    sql(url, "CREATE TABLE bench_ref (id int PRIMARY KEY, n int NOT NULL) "
             "WITH (fillfactor = 85)")
    sql(url, "INSERT INTO bench_ref SELECT g, 0 FROM generate_series(1, 100000) g")
    script = "\\set id random(1, 100000)\nUPDATE bench_ref SET n = n + 1 WHERE id = :id;\n"
    print(f"\n{'claimers':>8} {'jobs/s':>10} {'pgbench 1-row UPDATE tps':>26} "
          f"{'jobs/s / (tps/2)':>18}")
    ctx = multiprocessing.get_context("fork")
    for n in clients:
        db.reset_engine()
        per = jobs // n
        with ctx.Pool(n) as pool:
            began = time.perf_counter()
            results = pool.map(_drain, [(f"w{i}", per) for i in range(n)])
            wall = time.perf_counter() - began
        done = sum(r[0] for r in results)
        rate = done / wall
        tps = pgbench(url, script, clients=n, seconds=5)
        print(f"{n:>8} {rate:>10.0f} {tps:>26.0f} {rate / (tps / 2):>17.0%}")
