"""What one claim walks behind a held snapshot: `python -m bench bloat --hold-xmin --walk`.

No pool: 60,000 no-op jobs (enqueued 500 to a statement, as a stream of
producers would: the rows of one statement share their "availableAt"), then,
with and without a REPEATABLE READ transaction that has read a row held open,
claims of 100 jobs in a loop; every 10,000 jobs claimed, the claim a pool
child makes (its types, a pool of 2, 10 jobs) under EXPLAIN (ANALYZE, BUFFERS),
rolled back: from the claim index's head, and from a cursor at the first row
the last claim took (queue_core/claim_cursor.py). A claim moves its rows out of
the claim's partial index by an update that cannot be HOT; while the snapshot
could see the old versions, their entries stay at the head and none may be
marked dead, so the claim from the head visits one more heap row per job
claimed.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg2

from bench.bloat_hold import CLAIM, CLAIM_FROM, CLAIM_PARAMS
from bench.common import machine, scratch_database
from skiplock import queue_core as q
from skiplock.queue_core.claim_cursor import ClaimCursor
from skiplock.queue_core.database.urls import libpq_dsn

JOBS, STEP, BITE = 60_000, 10_000, 100


def _explain(cur: psycopg2.extensions.cursor, statement: str,
             params: dict[str, Any]) -> tuple[float, int]:
    cur.execute("BEGIN")
    try:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
        raw = cur.fetchone()[0]
    finally:
        cur.execute("ROLLBACK")
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    return plan["Execution Time"], plan["Plan"]["Shared Hit Blocks"] + \
        plan["Plan"]["Shared Read Blocks"]


def _walk(url: str, held: bool) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute('TRUNCATE "WorkerJob"')
    for _ in range(JOBS // 500):
        q.enqueue_many([{"type": "BENCH_NOOP", "payload": {}}] * 500)
    cur.execute('VACUUM ANALYZE "WorkerJob"')
    holder = None
    if held:
        holder = psycopg2.connect(libpq_dsn(url))
        holder.set_session(isolation_level="REPEATABLE READ")
        holder.cursor().execute('SELECT 1 FROM "WorkerJob" LIMIT 1')
    cursor = ClaimCursor(full_every_s=float("inf"))
    claimed = 0
    try:
        print(f"{'with' if held else 'without'} the snapshot held")
        while claimed < JOBS:
            head_ms, head_buffers = _explain(cur, CLAIM, CLAIM_PARAMS)
            line = f"  {claimed:6d} claimed: from the head {head_ms:6.2f} ms {head_buffers:5d} buffers"
            if cursor.positions:
                cursor.start_at(cursor.positions)
            segments = cursor.segments()
            if segments is not None:
                ms, buffers = _explain(cur, CLAIM_FROM, {**CLAIM_PARAMS, **segments})
                line += f"; from a cursor {ms:5.2f} ms {buffers:4d} buffers"
            print(line)
            for _ in range(STEP // BITE):
                claimed += len(q.claim("bench", limit=BITE, types=["BENCH_NOOP"],
                                       cursor=cursor))
    finally:
        if holder is not None:
            holder.close()
        conn.close()


def run(url: str) -> None:
    print(f"machine: {machine(url)}")
    for held in (False, True):
        _walk(url, held)


def main() -> None:
    with scratch_database() as url:
        run(url)
