"""The domain's hand-written SQL, named side by side: backfill scans and the demo's report.

The step handlers' reads and writes are in `store.py` (SQLAlchemy Core on the
tables of `schema.py`); these statements are the ones whose shape is easier to
read as SQL. Only `handlers/` executes them.
"""

from sqlalchemy import text

# -- backfills (handlers/backfill.py) (keyset pagination: each batch starts after the last id seen) ----------

INTERPRET_CANDIDATES = """
    SELECT e.id, e."userId" FROM "Event" e
    WHERE NOT EXISTS (SELECT 1 FROM "Interpretation" i WHERE i."eventId" = e.id)
      AND e.id > :after {filters}
    ORDER BY e.id
    LIMIT :batch
"""
COUNT_INTERPRET_CANDIDATES = """
    SELECT count(*) AS n,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM "WorkerJob" j WHERE j."idempotencyKey" = 'interpret:' || e.id))
               AS queued
    FROM "Event" e
    WHERE NOT EXISTS (SELECT 1 FROM "Interpretation" i WHERE i."eventId" = e.id) {filters}
"""
INTERPRET_FILTERS = {
    "user_id": 'AND e."userId" = :user_id',
    "since": 'AND e."occurredAt" >= :since',
    "until": 'AND e."occurredAt" < :until',
}

USERS_BATCH = """
    SELECT id, timezone FROM "User" WHERE id > :after {filters} ORDER BY id LIMIT :batch
"""
COUNT_USERS = 'SELECT count(*) AS n FROM "User" WHERE true {filters}'
USER_FILTERS = {"user_id": "AND id = :user_id"}

DB_NOW = text("SELECT now() AS now")

# -- the demo (handlers/demo.py) ------------------------------------------------------

# A demo run again replaces the demo user: their rows in the domain go with them (its
# foreign keys cascade), and their jobs that no worker holds go too.
FORGET_DEMO_JOBS = text("""
DELETE FROM "WorkerJob" WHERE "userId" = :u AND status <> 'PROCESSING'
""")
FORGET_DEMO_USER = text("""
DELETE FROM "User" WHERE id = :u
""")

# -- the demo's report ----------------------------------------------------------------

JOB_TIMINGS = text("""
SELECT type, count(*) AS jobs,
count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
count(*) FILTER (WHERE status = 'DEAD_LETTER') AS dead,
sum(attempts) - count(*) AS retries,
avg(extract(epoch FROM "completedAt" - "startedAt")) * 1000 AS avg_ms,
max(extract(epoch FROM "completedAt" - "startedAt")) * 1000 AS max_ms,
extract(epoch FROM max("completedAt") - min("createdAt")) AS span_s
FROM "WorkerJob" WHERE "userId" = :u GROUP BY type
ORDER BY min("createdAt"), type
""")

# The demo's fan-in (handlers/demo.py): each weekly review, its daily parents, and
# how long after the last of them completed it started.
WEEKLY_FAN_IN = text("""
SELECT w.payload ->> 'periodKey' AS period, count(d.parent) AS parents,
       extract(epoch FROM w."startedAt" - max(p."completedAt")) * 1000 AS gap_ms
FROM "WorkerJob" AS w
JOIN "WorkerJobDependency" AS d ON d.child = w.id
JOIN "WorkerJob" AS p ON p.id = d.parent
WHERE w."userId" = :u AND w.type = 'GENERATE_REVIEW' AND w.payload ->> 'type' = 'WEEKLY'
GROUP BY w.id, w.payload, w."startedAt"  -- "WorkerJob" is partitioned: no primary key to lean on
ORDER BY 1
""")

MOODS = text("""
SELECT mood, count(*) AS n FROM "Interpretation"
WHERE "userId" = :u GROUP BY mood ORDER BY mood
""")

PATTERNS = text("""
SELECT description, support, confidence, status FROM "Pattern"
WHERE "userId" = :u
ORDER BY status, support * confidence DESC, key
""")

INSIGHTS = text("""
SELECT DISTINCT ON ("questionKey") question, answer,
count(*) OVER () AS total
FROM "Insight" WHERE "userId" = :u
ORDER BY "questionKey", "createdAt" DESC, id
""")

REVIEWS = text("""
SELECT type, "periodKey", summary->>'headline' AS headline
FROM "Review" WHERE "userId" = :u
ORDER BY type, "periodKey"
""")

PLANS = text("""
SELECT "targetDate", focus, items FROM "DailyPlan"
WHERE "userId" = :u ORDER BY "targetDate"
""")

SUGGESTIONS = text("""
SELECT p."targetDate", s.status, s.statement, s.reason FROM "UomSuggestion" s
JOIN "DailyPlan" p ON p.id = s."dailyPlanId"
WHERE s."userId" = :u ORDER BY p."targetDate"
""")

PATTERN_OUTCOMES = text("""
SELECT result->>'outcome' AS outcome, count(*) AS n FROM "WorkerJob"
WHERE "userId" = :u AND type = 'DETECT_PATTERNS' AND status = 'COMPLETED'
GROUP BY 1 ORDER BY 2 DESC, 1
""")

DEAD_LETTERS = text("""
SELECT type, "lastError" FROM "WorkerJob"
WHERE "userId" = :u AND status = 'DEAD_LETTER'
""")

UNSETTLED_JOBS = text("""
SELECT count(*) FROM "WorkerJob"
WHERE "userId" = :u AND status IN ('PENDING', 'PROCESSING')
""")
