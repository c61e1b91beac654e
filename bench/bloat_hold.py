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
and its live and dead rows, the history partitions' sizes when there are any,
the backlog (enqueued less completed). The pool's warnings go to
bench/results/bloat_hold.log: a child that turned to claims from a cursor
(queue_core/claim_cursor.py) says so.
The hot table is "WorkerJobLive" once "WorkerJob" is partitioned, else
"WorkerJob" itself. Printed per window (held, after), side by side; `--plot`
draws both runs with matplotlib from the bench-only virtualenv.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect

from bench.bloat import POOL_FLAGS, max_rate
from bench.common import WORKER_FLAGS, machine, private_server, scratch_database, stop_pool
from skiplock import queue_core as q
from skiplock.queue_core import sql
from skiplock.queue_core.claim_cursor import ClaimCursor
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.lifecycle import types_param

HERE = Path(__file__).resolve().parent
LOGS = HERE / "results" / "bloat_hold.log"

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
            FROM pg_partition_tree('"WorkerJob"') AS t WHERE t.isleaf AND t.relid <> hot.rel)
    FROM hot JOIN pg_stat_user_tables AS s ON s.relid = hot.rel
"""
# The claims a pool child makes (its served types, a pool of 2), as psycopg2 takes them:
# from the claim index's head, and from a cursor's segments (queue_core/claim_cursor.py).
CLAIM = str(sql.CLAIM_TYPES.compile(dialect=pg_dialect.dialect()))
CLAIM_FROM = str(sql.CLAIM_TYPES_FROM.compile(dialect=pg_dialect.dialect()))
CLAIM_PARAMS = {"worker_id": "bench-sampler", "limit": 10, "children": 2,
                "types": types_param(["BENCH_NOOP"])}
COLUMNS = ["run", "seconds", "completed", "claim_ms", "cursor_claim_ms", "cursor_claim_buffers",
           "heap_bytes", "index_bytes", "claim_index_bytes", "live_rows", "dead_rows",
           "autovacuums", "history_bytes", "backlog"]
# The claims sampled: each from the head walks what the pool's would, load on the
# server the pool under test shares (at 2 s, 9 s of the server's time in 150 s behind
# the held snapshot, as much as the pool's own claims from the head).
CLAIM_EVERY_S = 10


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


def _claims(cur: psycopg2.extensions.cursor) -> tuple[float, float, int]:
    """Claims as a pool child makes them, in a transaction rolled back: the time of one
    from the head (ms, the server's, `claim_s`), then of one from a cursor at the
    first row that took (ms, under EXPLAIN ANALYZE) and the buffers it touched."""
    cursor = ClaimCursor()
    cur.execute("BEGIN")
    try:
        began = time.perf_counter()
        cur.execute(CLAIM, CLAIM_PARAMS)
        elapsed = time.perf_counter() - began
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        head_s = max((float(r["claim_s"]) for r in rows), default=elapsed)
        first: dict[int, Any] = {}
        for r in rows:
            if r["priority"] not in first or r["availableAt"] < first[r["priority"]]:
                first[r["priority"]] = r["availableAt"]
        cursor.start_at(first)
        segments = cursor.segments()
        if segments is None:  # nothing to claim: no position
            return head_s * 1000, float("nan"), 0
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_FROM,
                    {**CLAIM_PARAMS, **segments})
        raw = cur.fetchone()[0]
    finally:
        cur.execute("ROLLBACK")
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    top = plan["Plan"]
    return (head_s * 1000, plan["Execution Time"],
            top["Shared Hit Blocks"] + top["Shared Read Blocks"])


@dataclass
class Window:
    name: str
    start: float
    end: float


def _churn(url: str, run: str, target: float, held_s: float | None, total_s: float,
           ) -> list[dict[str, float | str]]:
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
    # The pool's warnings (a cursor turned on, say) go to a file beside the CSV.
    log = LOGS.open("a")
    log.write(f"--- {run}\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, "-m", "skiplock", "worker", *WORKER_FLAGS,
                             *POOL_FLAGS, "--metrics-port", str(port)],
                            env={**os.environ, "DATABASE_URL": url}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=log)
    enqueued = 0
    rows: list[dict[str, float | str]] = []
    began = time.monotonic()
    next_sample = next_cleanup = next_claim = began
    claim_ms = cursor_ms = float("nan")
    buffers = 0
    owed = 0.0
    tick = began
    try:
        while (now := time.monotonic()) - began < total_s:
            owed += target * (now - tick)
            tick = now
            if batch := int(owed):
                q.enqueue_many([{"type": "BENCH_NOOP", "payload": {}}] * batch)
                owed -= batch
                enqueued += batch
            if holder is not None and held_s is not None and now - began >= held_s:
                holder.rollback()
                holder.close()
                holder = None
                print(f"  {run}: the transaction ended at {now - began:.0f} s")
            if now >= next_cleanup and now - began >= 60:
                q.cleanup(60)  # what `skiplock cleanup --older-than 1m` does
                next_cleanup = now + 60
            if now >= next_sample:
                fresh = now >= next_claim
                if fresh:
                    claim_ms, cursor_ms, buffers = _claims(cur)
                    next_claim = now + CLAIM_EVERY_S
                cur.execute(SAMPLE)
                completed = _completed(port)
                # The backlog from the counts, not a count(*) of PENDING rows: that reads
                # the whole bloated table, load the pool under test would share.
                sample: list[float | str] = [
                    run, round(now - began, 1), completed,
                    round(claim_ms, 3) if fresh else "", round(cursor_ms, 3) if fresh else "",
                    buffers if fresh else "", *cur.fetchone(), enqueued - completed]
                rows.append(dict(zip(COLUMNS, sample, strict=True)))
                next_sample = now + 1
            time.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
    finally:
        if holder is not None:
            holder.close()
        stop_pool(proc)
        log.close()
        conn.close()
    return rows


Rows = list[dict[str, float | str]]


def _inside(rows: Rows, window: Window) -> Rows:
    return [r for r in rows if window.start <= float(r["seconds"]) < window.end]


def _rate(rows: Rows, window: Window) -> float:
    """Jobs completed per second within the window (the pool's counter)."""
    inside = [r for r in _inside(rows, window) if not math.isnan(float(r["completed"]))]
    if len(inside) < 2:
        return float("nan")
    return ((float(inside[-1]["completed"]) - float(inside[0]["completed"]))
            / (float(inside[-1]["seconds"]) - float(inside[0]["seconds"])))


def _values(rows: Rows, column: str) -> list[float]:
    return [float(r[column]) for r in rows if r[column] != ""]


def _quantile(values: list[float], share: float) -> float:
    values = sorted(v for v in values if not math.isnan(v))
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def _report(runs: dict[str, Rows], windows: list[Window]) -> None:
    print(f"{'':<26}" + "".join(f"{f'{name} / {w.name}':>18}" for w in windows for name in runs))
    cells: dict[str, list[float]] = {}
    for w in windows:
        for rows in runs.values():
            inside = _inside(rows, w)
            last = inside[-1] if inside else dict.fromkeys(COLUMNS, float("nan"))
            for label, value in (
                ("jobs/s", _rate(rows, w)),
                ("claim from head p50 ms", _quantile(_values(inside, "claim_ms"), 0.5)),
                ("claim from head p99 ms", _quantile(_values(inside, "claim_ms"), 0.99)),
                ("claim from cursor p50 ms", _quantile(_values(inside, "cursor_claim_ms"), 0.5)),
                ("claim from cursor p99 ms", _quantile(_values(inside, "cursor_claim_ms"), 0.99)),
                ("  its buffers p50", _quantile(_values(inside, "cursor_claim_buffers"), 0.5)),
                ("heap MiB at end", float(last["heap_bytes"]) / 2**20),
                ("indexes MiB at end", float(last["index_bytes"]) / 2**20),
                ("claim index MiB at end", float(last["claim_index_bytes"]) / 2**20),
                ("history MiB at end", float(last["history_bytes"]) / 2**20),
                ("dead rows max", max(_values(inside, "dead_rows"), default=float("nan"))),
                ("backlog at end", float(last["backlog"])),
            ):
                cells.setdefault(label, []).append(value)
    for label, values in cells.items():
        digits = 2 if "ms" in label else 1 if "MiB" in label else 0
        print(f"{label:<26}" + "".join(f"{v:18.{digits}f}" for v in values))


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
    parser.add_argument("--rate", type=float, default=None,
                        help="jobs/s to enqueue at, instead of --share of the measured maximum "
                             "(which moves with the machine's other load)")
    parser.add_argument("--csv", default=str(HERE / "results" / "bloat_hold.csv"),
                        help="where the samples go (default bench/results/bloat_hold.csv)")
    parser.add_argument("--shared-server", action="store_true",
                        help="use the development server instead of a private cluster")
    parser.add_argument("--plot", default=None,
                        help="draw the samples into this PNG with the bench-only virtualenv")
    parser.add_argument("--peer-python", default=str(HERE.parent / ".bench-venv/bin/python"),
                        help="Python that has matplotlib (default .bench-venv/bin/python)")
    parser.add_argument("--walk", action="store_true",
                        help="no pool: what one claim walks as claims go on behind the "
                             "snapshot, from the head and from a cursor (bench/bloat_walk.py)")
    args = parser.parse_args(argv)
    if args.walk:
        from bench import bloat_walk

        bloat_walk.main()
        return
    held_s = args.minutes * 60
    total_s = held_s + (args.after if args.after is not None else args.minutes / 2) * 60

    with private_server(not args.shared_server), scratch_database() as url:
        print(f"machine: {machine(url)}; load average {os.getloadavg()[0]:.2f} at the start")
        conn = psycopg2.connect(libpq_dsn(url))
        conn.autocommit = True
        cur = conn.cursor()
        peak = max_rate(url, cur, 20_000)
        target = args.rate or peak * args.share
        print(f"maximum rate {peak:.0f} jobs/s (2 children, 20000 no-op jobs); enqueueing at "
              f"{target:.0f} jobs/s; transaction held {held_s:.0f} s of {total_s:.0f} s")
        LOGS.parent.mkdir(parents=True, exist_ok=True)
        LOGS.write_text("")
        runs: dict[str, Rows] = {}
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
            writer.writerows([r[c] for c in COLUMNS] for r in rows)
    # The first minute has no cleanup yet: the held window is compared from then on.
    windows = [Window("held", min(60.0, held_s / 2), held_s), Window("after", held_s, total_s)]
    print(f"samples in {out}; windows: held {windows[0].start:.0f}-{held_s:.0f} s, "
          f"after {held_s:.0f}-{total_s:.0f} s")
    _report(runs, windows)
    switched = LOGS.read_text().split("--- held")[-1].count("claims start from remembered")
    print(f"children that turned to claims from a cursor in the held run: {switched} times "
          f"(the pool's warnings: {LOGS})")
    ratio = _rate(runs["held"], windows[0]) / _rate(runs["without"], windows[0])
    print(f"throughput with the transaction held: {ratio:.2f} of the run without it "
          f"(target >= 0.90)")
    # Growth once the transaction ended, past the first half of the rest (autovacuum
    # has had its turn by then): the target is none.
    tail = [r for r in runs["held"] if float(r["seconds"]) >= (held_s + total_s) / 2]
    if len(tail) >= 2:
        grew = (float(tail[-1]["heap_bytes"]) - float(tail[0]["heap_bytes"])) / 2**20
        print(f"hot table heap from {tail[0]['seconds']:.0f} s to the end: {grew:+.1f} MiB "
              "(target: no growth once the transaction ended)")
    if args.plot:
        subprocess.run([args.peer_python, str(HERE / "plot_bloat_hold.py"), str(out), args.plot,
                        str(held_s), f"{target:.0f} jobs/s (maximum {peak:.0f})"],
                       check=True)
        print(f"plot: {args.plot}")
