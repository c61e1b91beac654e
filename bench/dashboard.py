"""The dashboard's pages on a big table: the server's time for each page.

    python -m bench dashboard [--finished 1000000] [--pending 100000] [--runs 20]

The table is filled by the server itself, one `INSERT ... SELECT
generate_series` per kind of row (a few seconds, no client work): `--finished`
jobs completed over the last seven days (the default retention of `skiplock
cleanup`), one in a hundred dead-lettered, six job types, a thousand users,
every job with an idempotency key; `--pending` jobs, four in five ready (a
backlog up to an hour old) and the rest scheduled within the next day; a pool
of eight children on the process table, each holding a job. Then VACUUM
ANALYZE, as autovacuum would have done.

Each page is requested through the whole application (authentication, CSRF
session, the reads, the templates) with Flask's test client in this process,
so the time is the server's: no network, no browser. Target: every page
under 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from urllib.parse import urlencode

from bench.common import machine, percentile, scratch_database, sql

FILL_USERS = """
INSERT INTO "User" (id, name, timezone)
SELECT 'bench-user-' || u, 'Bench user ' || u, 'UTC' FROM generate_series(1, 1000) u
"""

TYPES = ("ARRAY['INTERPRET_EVENT', 'DETECT_PATTERNS', 'GENERATE_INSIGHTS', 'GENERATE_REVIEW', "
         "'GENERATE_TOMORROW_PLAN', 'SUGGEST_UOM_UPDATE']")

# Ids as enqueue makes them: the time in ms, then random digits.
FILL_FINISHED = """
INSERT INTO "WorkerJob" (id, type, payload, status, "availableAt", attempts, "maxAttempts",
                         "lastError", "idempotencyKey", "userId", "createdAt", "startedAt",
                         "completedAt", result)
SELECT lpad(to_hex((EXTRACT(EPOCH FROM t.done) * 1000)::bigint - 2000), 12, '0')
           || substr(md5(g::text), 1, 20),
       ({types})[1 + g % 6], jsonb_build_object('eventId', 'evt-' || g),
       CASE WHEN g % 100 = 0 THEN 'DEAD_LETTER' ELSE 'COMPLETED' END::"JobStatus",
       t.done - interval '2 s', CASE WHEN g % 100 = 0 THEN 3 ELSE 1 END, 3,
       CASE WHEN g % 100 = 0 THEN 'Error: event evt-' || g || ' failed three times' END,
       'bench:' || g, 'bench-user-' || (1 + g % 1000),
       t.done - interval '2 s', t.done - interval '1 s', t.done,
       CASE WHEN g % 100 <> 0 THEN '{{"ok": true}}'::jsonb END
FROM generate_series(1, {n}) g,
     LATERAL (SELECT now() - ({n} - g) * (interval '7 days' / {n}) AS done) t
"""

FILL_PENDING = """
INSERT INTO "WorkerJob" (id, type, payload, status, "availableAt", "idempotencyKey", "userId",
                         "createdAt")
SELECT lpad(to_hex((EXTRACT(EPOCH FROM now()) * 1000)::bigint - {n} + g), 12, '0')
           || substr(md5('p' || g), 1, 20),
       ({types})[1 + g % 6], jsonb_build_object('eventId', 'evt-p' || g), 'PENDING',
       CASE WHEN g % 5 = 0 THEN now() + (g % 1440) * interval '1 minute'
            ELSE now() - (g % 3600) * interval '1 second' END,
       'bench:p' || g, 'bench-user-' || (1 + g % 1000), now() - interval '1 hour'
FROM generate_series(1, {n}) g
"""

FILL_POOL = """
WITH running AS (
    UPDATE "WorkerJob" SET status = 'PROCESSING', attempts = 1, "startedAt" = now(),
           "lockedAt" = now(), "lockedBy" = 'bench-host:' || right(id, 4)
    WHERE id IN (SELECT id FROM "WorkerJob" WHERE status = 'PENDING' LIMIT 8)
    RETURNING id, type, "lockedBy"
), master AS (
    INSERT INTO "WorkerProcess" (id, kind, host, pid, state, concurrency, "startedAt")
    VALUES ('bench-master', 'master', 'bench-host', 1000, 'running', 8, now() - interval '1 day')
)
INSERT INTO "WorkerProcess" (id, kind, "masterId", host, pid, "slot", "startedAt", "jobId",
                             "jobType", "jobStartedAt")
SELECT r."lockedBy", 'child', 'bench-master', 'bench-host', 1001 + row_number() OVER (),
       row_number() OVER (), now() - interval '1 hour', r.id, r.type, now()
FROM running r
"""


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench dashboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=1_000_000,
                        help="finished jobs in the table (default 1000000)")
    parser.add_argument("--pending", type=int, default=100_000,
                        help="pending jobs in the table (default 100000)")
    parser.add_argument("--runs", type=int, default=20, help="requests per page (default 20)")
    args = parser.parse_args(argv)

    from skiplock.dashboard.app import create_app
    from skiplock.dashboard.settings import DashboardSettings
    from skiplock.ops.jobs import list_jobs

    with scratch_database(demo=True) as url:  # its jobs belong to demo users
        print(f"machine: {machine(url)}")
        began = time.perf_counter()
        sql(url, FILL_USERS)
        sql(url, FILL_FINISHED.format(n=args.finished, types=TYPES))
        sql(url, FILL_PENDING.format(n=args.pending, types=TYPES))
        sql(url, FILL_POOL)
        sql(url, 'VACUUM ANALYZE "WorkerJob"')
        print(f"table: {args.finished:,} finished jobs ({args.finished // 100:,} dead letters), "
              f"{args.pending:,} pending (filled in {time.perf_counter() - began:.1f} s)")

        settings = DashboardSettings(allow_actions=True)
        client = create_app(settings).test_client()
        deep = _deep_cursor(url, args.finished // 2)
        some_job = list_jobs("DEAD_LETTER", limit=1)[0]["id"]
        pages = {
            "overview": "/",
            "overview, refresh fragment": "/?fragment=1",
            "jobs, all, newest first": "/jobs",
            "jobs, completed": "/jobs?status=COMPLETED",
            f"jobs, completed, page {args.finished // 100:,} (keyset)":
                "/jobs?" + urlencode({"status": "COMPLETED", "after": deep}),
            "jobs, pending, claim order": "/jobs?status=PENDING",
            "jobs, dead letters of a type": "/jobs?status=DEAD_LETTER&type=GENERATE_REVIEW",
            "jobs, one user": "/jobs?user=bench-user-42",
            "jobs, completed in a time range":
                "/jobs?status=COMPLETED&since=2000-01-01T00:00&until=2100-01-01T00:00",
            "jobs, key prefix": "/jobs?key=bench:99999",
            "search by idempotency key": f"/jobs?q=bench:{args.finished // 3}",
            "a job (dead letter)": f"/jobs/{some_job}",
            "processes": "/processes",
            "schedules": "/schedules",
            "action log": "/actions",
        }
        print(f"\n{'page':<48} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        worst = 0.0
        for name, path in pages.items():
            times = []
            for i in range(args.runs + 2):
                t0 = time.perf_counter()
                response = client.get(path)
                spent = (time.perf_counter() - t0) * 1000
                if response.status_code not in (200, 302):
                    raise SystemExit(f"{path}: HTTP {response.status_code}\n"
                                     f"{response.get_data(as_text=True)[:2000]}")
                if i >= 2:  # the first two warm the caches and the connection pool
                    times.append(spent)
            worst = max(worst, percentile(times, 0.95))
            print(f"{name:<48} {statistics.median(times):>8.1f} {percentile(times, 0.95):>8.1f} "
                  f"{max(times):>8.1f}")
        verdict = "every page under 200 ms" if worst < 200 else "SOME PAGE OVER 200 ms"
        print(f"\nslowest p95: {worst:.1f} ms: {verdict}")


def _deep_cursor(url: str, offset: int) -> str:
    """The cursor of the completed-jobs listing `offset` rows down (found once, here,
    with OFFSET: the page itself never uses one)."""
    import psycopg2

    from skiplock.dashboard.reads import cursor_of
    from skiplock.queue_core.database.urls import libpq_dsn

    conn = psycopg2.connect(libpq_dsn(url))
    with conn.cursor() as cur:
        cur.execute("""SELECT "completedAt", id FROM "WorkerJob" WHERE status = 'COMPLETED'
                       ORDER BY "completedAt" DESC, id DESC OFFSET %s LIMIT 1""", (offset,))
        completed_at, job_id = cur.fetchone()
    conn.close()
    return cursor_of("COMPLETED", {"completedAt": completed_at, "id": job_id})
