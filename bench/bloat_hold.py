"""Bloat under churn with a long transaction open: `python -m bench bloat --hold-xmin`.

The churn of `python -m bench bloat` (a real pool of 2 children running no-op
jobs at `--share` of the rate it measured first, `cleanup --older-than 1m`
every minute, autovacuum with the table's own settings, a private cluster),
twice in one invocation on one scratch database: first without, then with a
REPEATABLE READ transaction that has taken its snapshot (it read a row of
"WorkerJob") held open for `--minutes`, then closed; both runs go on for
`--after` minutes more, which shows the recovery. Such a transaction holds back
the xmin horizon: vacuum may remove no row version it could still see.

Sampled every second: jobs completed (the pool's own counter, from its
metrics port), the claim's time and buffers (the pool's claim statement under
EXPLAIN (ANALYZE, BUFFERS), rolled back), the hot table's heap and index sizes
and its live and dead rows, the history partitions' sizes when there are any.
The hot table is "WorkerJobLive" once "WorkerJob" is partitioned, else
"WorkerJob" itself. Printed per window (held, after), side by side; `--plot`
draws both runs with matplotlib from the bench-only virtualenv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect

from bench.bloat import POOL_FLAGS, max_rate
from bench.common import machine, private_server, scratch_database, start_pool, stop_pool
from skiplock import queue_core as q
from skiplock.queue_core import sql
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.lifecycle import types_param

HERE = Path(__file__).resolve().parent

# The hot table: the partition of live rows once "WorkerJob" is partitioned (history
# moved out of it), else the table; its claim index is the one in the claim's order.
# History: every other leaf of "WorkerJob"'s partition tree (none while it is a table).
SAMPLE = """
    WITH hot AS (SELECT coalesce(to_regclass('"WorkerJobLive"'), '"WorkerJob"'::regclass) AS rel)
    SELECT pg_relation_size(hot.rel), pg_indexes_size(hot.rel),
           coalesce((SELECT pg_relation_size(i.indexrelid) FROM pg_index AS i
                     WHERE i.indrelid = hot.rel
                       AND pg_get_indexdef(i.indexrelid) LIKE '%(priority DESC, "availableAt")%'
                       AND pg_get_expr(i.indpred, i.indrelid) LIKE '%PENDING%' LIMIT 1), 0),
           s.n_live_tup, s.n_dead_tup, s.autovacuum_count,
           (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
            FROM pg_partition_tree('"WorkerJob"') AS t WHERE t.isleaf AND t.relid <> hot.rel),
           (SELECT count(*) FROM "WorkerJob" WHERE status = 'PENDING')
    FROM hot JOIN pg_stat_user_tables AS s ON s.relid = hot.rel
"""
# The claim a pool child makes (its served types, a pool of 2), as psycopg2 takes it.
CLAIM = str(sql.CLAIM_TYPES.compile(dialect=pg_dialect.dialect()))
CLAIM_PARAMS = {"worker_id": "bench-sampler", "limit": 10, "children": 2,
                "types": types_param(["BENCH_NOOP"])}
COLUMNS = ["run", "seconds", "completed", "claim_ms", "claim_buffers", "heap_bytes",
           "index_bytes", "claim_index_bytes", "live_rows", "dead_rows", "autovacuums",
           "history_bytes", "pending"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _completed(port: int) -> float:
    """The pool's skiplock_jobs_completed_total, all types."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            body = answer.read().decode()
    except OSError:
        return float("nan")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("skiplock_jobs_completed_total{"))


def _claim(cur: psycopg2.extensions.cursor) -> tuple[float, int]:
    """The claim's execution time (ms) and shared buffers it touched, rolled back."""
    cur.execute("BEGIN")
    try:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM, CLAIM_PARAMS)
        raw = cur.fetchone()[0]
    finally:
        cur.execute("ROLLBACK")
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    top = plan["Plan"]
    return plan["Execution Time"], top["Shared Hit Blocks"] + top["Shared Read Blocks"]


@dataclass
class Window:
    name: str
    start: float
    end: float


def _churn(url: str, run: str, target: float, held_s: float | None, total_s: float,
           ) -> list[list[float | str]]:
    """One run: the pool at `target` jobs/s for `total_s`; with `held_s`, a snapshot held
    from the start for that long. One row of COLUMNS a second."""
    port = _free_port()
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    cur = conn.cursor()
    holder = None
    if held_s is not None:
        holder = psycopg2.connect(libpq_dsn(url))
        holder.set_session(isolation_level="REPEATABLE READ")
        # The snapshot is taken by the first statement that reads: from now on vacuum
        # keeps every row version it can see.
        holder.cursor().execute('SELECT 1 FROM "WorkerJob" LIMIT 1')
    proc = start_pool(url, *POOL_FLAGS, "--metrics-port", str(port))
    rows: list[list[float | str]] = []
    began = time.monotonic()
    next_sample = next_cleanup = began
    owed = 0.0
    tick = began
    try:
        while (now := time.monotonic()) - began < total_s:
            owed += target * (now - tick)
            tick = now
            if batch := int(owed):
                q.enqueue_many([{"type": "BENCH_NOOP", "payload": {}}] * batch)
                owed -= batch
            if holder is not None and held_s is not None and now - began >= held_s:
                holder.rollback()
                holder.close()
                holder = None
                print(f"  {run}: the transaction ended at {now - began:.0f} s")
            if now >= next_cleanup and now - began >= 60:
                q.cleanup(60)  # what `skiplock cleanup --older-than 1m` does
                next_cleanup = now + 60
            if now >= next_sample:
                claim_ms, buffers = _claim(cur)
                cur.execute(SAMPLE)
                sizes = list(cur.fetchone())
                rows.append([run, round(now - began, 1), _completed(port), round(claim_ms, 3),
                             buffers, *sizes])
                next_sample = now + 1
            time.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
    finally:
        if holder is not None:
            holder.close()
        stop_pool(proc)
        conn.close()
    return rows


def _rate(rows: list[list[float | str]], window: Window) -> float:
    inside = [r for r in rows if window.start <= float(r[1]) < window.end
              and float(r[2]) == float(r[2])]
    if len(inside) < 2:
        return float("nan")
    return (float(inside[-1][2]) - float(inside[0][2])) / (float(inside[-1][1]) - float(inside[0][1]))


def _quantile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _report(runs: dict[str, list[list[float | str]]], windows: list[Window]) -> None:
    print(f"{'':<22}" + "".join(f"{f'{name} / {w.name}':>24}" for w in windows for name in runs))
    lines: dict[str, list[str]] = {k: [] for k in (
        "jobs/s", "claim p50 ms", "claim p99 ms", "claim buffers p50", "heap MiB at end",
        "claim index MiB at end", "indexes MiB at end", "dead rows max", "pending at end")}
    for w in windows:
        for rows in runs.values():
            inside = [r for r in rows if w.start <= float(r[1]) < w.end]
            ms = [float(r[3]) for r in inside]
            last = inside[-1] if inside else [float("nan")] * len(COLUMNS)
            lines["jobs/s"].append(f"{_rate(rows, w):24.0f}")
            lines["claim p50 ms"].append(f"{_quantile(ms, 0.5):24.2f}")
            lines["claim p99 ms"].append(f"{_quantile(ms, 0.99):24.2f}")
            lines["claim buffers p50"].append(f"{_quantile([float(r[4]) for r in inside], 0.5):24.0f}")
            lines["heap MiB at end"].append(f"{float(last[5]) / 2**20:24.1f}")
            lines["claim index MiB at end"].append(f"{float(last[7]) / 2**20:24.1f}")
            lines["indexes MiB at end"].append(f"{float(last[6]) / 2**20:24.1f}")
            lines["dead rows max"].append(f"{max((float(r[9]) for r in inside), default=0):24.0f}")
            lines["pending at end"].append(f"{float(last[12]):24.0f}")
    for label, cells in lines.items():
        print(f"{label:<22}" + "".join(cells))


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench bloat --hold-xmin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold-xmin", action="store_true", required=True)
    parser.add_argument("--minutes", type=float, default=4,
                        help="how long the transaction is held (default 4)")
    parser.add_argument("--after", type=float, default=None,
                        help="minutes each run goes on after that (default half of --minutes)")
    # Below `bloat`'s 0.8: with the sampler's claim every second and cleanup on two
    # cores, the run without the transaction must keep up, or both runs measure the
    # pool's limit instead of what the transaction costs.
    parser.add_argument("--share", type=float, default=0.5,
                        help="share of the measured maximum rate to enqueue at (default 0.5)")
    parser.add_argument("--csv", default=str(HERE / "results" / "bloat_hold.csv"),
                        help="where the samples go (default bench/results/bloat_hold.csv)")
    parser.add_argument("--shared-server", action="store_true",
                        help="use the development server instead of a private cluster")
    parser.add_argument("--plot", default=None,
                        help="draw the samples into this PNG with the bench-only virtualenv")
    parser.add_argument("--peer-python", default=str(HERE.parent / ".bench-venv/bin/python"),
                        help="Python that has matplotlib (default .bench-venv/bin/python)")
    args = parser.parse_args(argv)
    held_s = args.minutes * 60
    total_s = held_s + (args.after if args.after is not None else args.minutes / 2) * 60

    with private_server(not args.shared_server), scratch_database() as url:
        print(f"machine: {machine(url)}; load average {os.getloadavg()[0]:.2f} at the start")
        conn = psycopg2.connect(libpq_dsn(url))
        conn.autocommit = True
        cur = conn.cursor()
        peak = max_rate(url, cur, 20_000)
        target = peak * args.share
        print(f"maximum rate {peak:.0f} jobs/s (2 children, 20000 no-op jobs); enqueueing at "
              f"{target:.0f} jobs/s; transaction held {held_s:.0f} s of {total_s:.0f} s")
        runs: dict[str, list[list[float | str]]] = {}
        for name, held in (("without", None), ("held", held_s)):
            cur.execute('TRUNCATE "WorkerJob"')
            cur.execute('VACUUM ANALYZE "WorkerJob"')
            runs[name] = _churn(url, name, target, held, total_s)
        conn.close()
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for rows in runs.values():
            writer.writerows(rows)
    # The first minute has no cleanup yet: the held window is compared from then on.
    windows = [Window("held", min(60.0, held_s / 2), held_s), Window("after", held_s, total_s)]
    print(f"samples in {out}; windows: held {windows[0].start:.0f}-{held_s:.0f} s, "
          f"after {held_s:.0f}-{total_s:.0f} s")
    _report(runs, windows)
    ratio = _rate(runs["held"], windows[0]) / _rate(runs["without"], windows[0])
    print(f"throughput with the transaction held: {ratio:.2f} of the run without it "
          f"(target >= 0.90)")
    after = [r for r in runs["held"] if float(r[1]) >= held_s + 60]
    if len(after) >= 2:
        grew = (float(after[-1][5]) - float(after[0][5])) / 2**20
        print(f"hot table heap from {held_s + 60:.0f} s to the end: {grew:+.1f} MiB "
              "(target: no growth once the transaction ended)")
    print(f"claim p50 {statistics.median(float(r[3]) for r in runs['held']):.2f} ms held run, "
          f"{statistics.median(float(r[3]) for r in runs['without']):.2f} ms without")
    if args.plot:
        subprocess.run([args.peer_python, str(HERE / "plot_bloat_hold.py"), str(out), args.plot,
                        str(held_s), f"{target:.0f} jobs/s ({args.share:.0%} of {peak:.0f})"],
                       check=True)
        print(f"plot: {args.plot}")
