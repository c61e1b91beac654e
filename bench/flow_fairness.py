"""Fairness between keys (queue_core/features/fairness.py): what it costs, how fair it is.

    python -m bench flow --only fairness [--jobs 20000]

On one scratch database, in one run:
- the claim and completion of an ordinary job (no fair key), inside the server,
  with the fairness triggers in place and with them disabled, alternated: what
  the trigger WHENs cost every claim;
- pool throughput (2 children) of no-op jobs: without fair keys, against the same
  jobs spread over many keys of weight 1, each within its window (fairness on,
  not binding), over 20 keys whose windows bind, and all of one key alone (its
  window binds with nobody to be fair to); alternated, best of two;
  and of jobs of 5 ms of CPU, without fair keys and over 20 binding keys;
- a heavy key with 100,000 jobs queued and a light key enqueueing one job every
  50 ms meanwhile: the light key's wait (enqueue to start), p50 and p99, beside
  the time the heavy backlog takes to drain (what a FIFO queue would make it wait);
- two keys of weights 1 and 3 with equal backlogs: each one's share of the first
  starts while both had jobs waiting.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from sqlalchemy import text

from bench.common import percentile, sql, start_pool, stop_pool
from bench.pool import _wait_done as wait_completed
from skiplock import queue_core as q
from skiplock.queue_core.database import db
from skiplock.queue_core.features import fairness

# The fairness triggers, read from the catalog: the measure runs on any version of them
# (the row triggers are the live part's, the statement triggers the root's and its too).
_TRIGGERS_NOW = """SELECT tgrelid::regclass::text, tgname FROM pg_trigger
                   WHERE tgrelid IN ('"WorkerJob"'::regclass, '"WorkerJobLive"'::regclass)
                     AND tgname LIKE '%fair%' AND NOT tgisinternal"""


def _scalar(statement: str, **params: Any) -> Any:
    with db.get_engine().begin() as conn:
        return conn.execute(text(statement), params).scalar()


def _fill(count: int, key_of: Any = None, batch: int = 5_000, job_type: str = "BENCH_NOOP",
          payload: dict[str, Any] | None = None) -> None:
    for start in range(0, count, batch):
        q.enqueue_many([{"type": job_type, "payload": payload or {},
                         **({"fair_key": key_of(i)} if key_of else {})}
                        for i in range(start, min(start + batch, count))])
    sql(_url, 'VACUUM ANALYZE "WorkerJob"')


def _throughput(total: int, key_of: Any = None, job_type: str = "BENCH_NOOP",
                payload: dict[str, Any] | None = None) -> float:
    sql(_url, 'TRUNCATE "WorkerJob"')
    _fill(total, key_of, job_type=job_type, payload=payload)
    proc = start_pool(_url, "--concurrency", "2")
    try:
        wait_completed(total, timeout=900)
    finally:
        stop_pool(proc)
    span = _scalar("""SELECT EXTRACT(EPOCH FROM max("completedAt") - min("startedAt"))
                      FROM "WorkerJob" WHERE status = 'COMPLETED'""")
    return total / float(span)


# Claims and completions of ordinary jobs, batches of 10, inside the server and one
# transaction: the statements' own time, without the commits (whose flush time on a
# shared machine swamps a few microseconds). The claim is the shape of _CLAIM's.
_CLAIM_LOOP = """
    CREATE OR REPLACE FUNCTION bench_claim_loop(batches integer) RETURNS float8
    LANGUAGE plpgsql AS $$
    DECLARE began timestamptz := clock_timestamp();
    BEGIN
        FOR i IN 1..batches LOOP
            WITH ready AS (
                SELECT id FROM "WorkerJob"
                WHERE status = 'PENDING' AND "heldBack" IS NULL
                  AND "availableAt" <= statement_timestamp()
                ORDER BY priority DESC, "availableAt" LIMIT 10 FOR UPDATE SKIP LOCKED)
            UPDATE "WorkerJob" AS j
            SET status = 'PROCESSING', attempts = j.attempts + 1,
                "lockedAt" = statement_timestamp(), "startedAt" = statement_timestamp(),
                "lockedBy" = 'bench'
            FROM ready WHERE j.id = ready.id;
            UPDATE "WorkerJob" SET status = 'COMPLETED', "completedAt" = statement_timestamp()
            WHERE status = 'PROCESSING';
        END LOOP;
        RETURN extract(epoch FROM clock_timestamp() - began);
    END $$
"""


def _claim_cost(rounds: int = 4, jobs: int = 5_000) -> dict[str, list[float]]:
    """Microseconds per claim and completion of one ordinary job, triggers on and off."""
    sql(_url, _CLAIM_LOOP)
    with db.get_engine().begin() as conn:
        triggers = [(r[0], r[1]) for r in conn.execute(text(_TRIGGERS_NOW))]
    results: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        for mode in ("on", "off"):
            sql(_url, 'TRUNCATE "WorkerJob"')
            action = "ENABLE" if mode == "on" else "DISABLE"
            for table, name in triggers:
                sql(_url, f'ALTER TABLE ONLY {table} {action} TRIGGER "{name}"')
            _fill(jobs)
            seconds = float(_scalar("SELECT bench_claim_loop(:n)", n=jobs // 10))
            results[mode].append(seconds / jobs * 1e6)
    for table, name in triggers:
        sql(_url, f'ALTER TABLE ONLY {table} ENABLE TRIGGER "{name}"')
    return results


def _light_wait(heavy: int = 100_000, samples: int = 100) -> tuple[float, float, float]:
    sql(_url, 'TRUNCATE "WorkerJob"')
    _fill(heavy, lambda i: "heavy")
    proc = start_pool(_url, "--concurrency", "2")
    began = time.monotonic()
    try:
        wait_completed(200, timeout=120)  # the pool is under way
        for _ in range(samples):
            q.enqueue("BENCH_NOOP", {}, fair_key="light")
            time.sleep(0.05)
        deadline = time.monotonic() + 300
        while _scalar("""SELECT count(*) FROM "WorkerJob" WHERE "fairKey" = 'light'
                         AND status = 'COMPLETED'""") < samples:
            if time.monotonic() > deadline:
                raise SystemExit("the light key's jobs did not run")
            time.sleep(0.05)
        wait_completed(heavy + samples, timeout=900)
        drained = time.monotonic() - began
    finally:
        stop_pool(proc)
    with db.get_engine().begin() as conn:
        waits = [float(r[0]) * 1000 for r in conn.execute(text(
            """SELECT EXTRACT(EPOCH FROM "startedAt" - "createdAt") FROM "WorkerJob"
               WHERE "fairKey" = 'light'"""))]
    return percentile(waits, 0.5), percentile(waits, 0.99), drained


def _shares(each: int = 3_000) -> float:
    sql(_url, 'TRUNCATE "WorkerJob"')
    fairness.set_weight("b", 3)
    _fill(each, lambda i: "a")
    _fill(each, lambda i: "b")
    proc = start_pool(_url, "--concurrency", "2")
    try:
        wait_completed(2 * each, timeout=900)
    finally:
        stop_pool(proc)
    fairness.set_weight("b", None)
    # The starts while both keys had jobs waiting: b's backlog lasts until 4/3 x each.
    first = int(each * 4 / 3 * 0.9)
    return float(_scalar(
        """SELECT avg(("fairKey" = 'a')::int) FROM (SELECT "fairKey" FROM "WorkerJob"
           ORDER BY "startedAt" LIMIT :n) AS s""", n=first))


_url = ""


def run_case(url: str, args: argparse.Namespace) -> None:
    global _url
    _url = url
    cost = _claim_cost()
    on, off = min(cost["on"]), min(cost["off"])
    print(f"claim and completion of an ordinary job, in the server, no commits (best of "
          f"{len(cost['on'])}, alternated): {on:.1f} us with the fairness triggers, "
          f"{off:.1f} us without ({on / off:.3f})")
    total = args.jobs
    # Alternated, best of each: the machine's load moves between the runs.
    cases: dict[str, Any] = {"plain": None, "spread": lambda i: f"k{i % (total // 5)}",  # 5 a key: window 10
             "binding": lambda i: f"k{i % 20}", "alone": lambda i: "alone"}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(2):
        for name, key_of in cases.items():
            rates[name].append(_throughput(total, key_of))
    plain, spread, binding, alone = (max(rates[name]) for name in cases)
    print(f"pool throughput, {total} no-op jobs, 2 children, best of {len(rates['plain'])} "
          f"(alternated): without fair keys {plain:.0f} jobs/s "
          f"(runs: {', '.join(f'{r:.0f}' for r in rates['plain'])})")
    print(f"  {total // 5} fair keys of weight 1, not binding: {spread:.0f} jobs/s "
          f"({spread / plain:.2f} of without; runs: "
          f"{', '.join(f'{r:.0f}' for r in rates['spread'])})")
    print(f"  20 fair keys, windows binding: {binding:.0f} jobs/s ({binding / plain:.2f}; runs: "
          f"{', '.join(f'{r:.0f}' for r in rates['binding'])})")
    print(f"  one fair key alone: {alone:.0f} jobs/s ({alone / plain:.2f}; runs: "
          f"{', '.join(f'{r:.0f}' for r in rates['alone'])})")
    cpu: dict[str, list[float]] = {"plain": [], "binding": []}
    for _ in range(2):
        for name in cpu:
            cpu[name].append(_throughput(2_000, cases[name], "BENCH_CPU", {"ms": 5}))
    print(f"  jobs of 5 ms of CPU, 2,000, best of 2: without fair keys {max(cpu['plain']):.0f} "
          f"jobs/s, 20 fair keys binding {max(cpu['binding']):.0f} "
          f"({max(cpu['binding']) / max(cpu['plain']):.2f})")
    p50, p99, drained = _light_wait()
    print(f"light key behind a heavy key of 100,000 queued: wait p50 {p50:.0f} ms, "
          f"p99 {p99:.0f} ms (the heavy backlog took {drained:.0f} s to drain)")
    share = _shares()
    print(f"weights 1:3, equal backlogs: the weight-1 key got {share:.3f} of the starts "
          f"while both waited (fair: 0.250)")
