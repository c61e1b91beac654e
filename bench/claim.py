"""Claim and complete: latency against a deep backlog, throughput with N claimers.

    python -m bench claim [--backlog 1000000] [--small 1000] [--jobs 20000] [--clients 1,2,4]
                          [--keys 1000]

The claim's latency is measured at `--small` pending jobs and again at
`--backlog`; their ratio is a target of the speed work (at most 1.3). It is
measured once more on the same backlog spread over `--keys` concurrency keys
(limit 2 each) of which one key holds half the jobs (a backfill): what limits
cost the claim (nothing: held-back jobs are outside its index) and the
completion (its trigger frees the slot and lets the key's next job in).

Each job costs two transactions (the claim, then the fenced completion), so
the reference is pgbench running a one-row UPDATE by primary key per
transaction on the same server with the same number of clients: the queue
cannot beat half that rate, and the closer it gets, the less it wastes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from sqlalchemy import Engine, create_engine

from bench.common import fill, machine, mean, percentile, pgbench, scratch_database, sql
from skiplock import queue_core as q
from skiplock.queue_core import db, scratch


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
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]

    # Two queues on the same server: --small pending jobs, and --backlog. Claims
    # alternate between them, so that a busy moment of the machine hits both.
    samples = min(2000, args.small // 2, args.backlog // 2)
    with scratch.scratch_database("skiplock_bench_small") as small_url:
        fill(args.small, "BENCH", {})
        with scratch_database() as url:
            print(f"machine: {machine(url)}")
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
            sql(url, 'TRUNCATE "WorkerJob", "WorkerConcurrencyKey"')
            fill_keyed(args.backlog, args.keys)
            latency(f"limits ({args.keys} keys, limit 2)", args.backlog)
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
