"""The chaos soak's debounce workload (bench/chaos.py, FLOWS).

Each top-up enqueues one to three CHAOS_WORK jobs debounced by one of a few
keys (a short debounce, either mode), and records, in the top-up's own
transaction (so a top-up that a fault rolls back records nothing), which job
each enqueue returned and the database time just after it. After the drain:

- never two pending jobs of a key: the time each job of a key waited (from its
  first enqueue to its first claim, from the status transitions) never overlaps
  another's;
- every key's last enqueue ran after it: the job it returned was first claimed
  after that enqueue's time (the enqueue was folded into a job not claimed yet,
  or made a new one), and it ended, COMPLETED or DEAD_LETTER.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

import skiplock

KEYS = 4

_RECORD = text("""
    CREATE TABLE IF NOT EXISTS chaos_debounce (
        key text NOT NULL, job_id text NOT NULL, at timestamptz NOT NULL);
    INSERT INTO chaos_debounce (key, job_id, at) VALUES (:key, :job_id, clock_timestamp())
""")

# Jobs of one key whose waits as the key's pending job overlapped: each from its
# first enqueue's record (after the statement: one that waited for a claim of the
# key's previous job to commit started before that claim) to its first claim.
_OVERLAPS = """
    WITH waits AS (
        SELECT d.key, d.job_id AS id, min(d.at) AS since,
               COALESCE((SELECT min(t.at) FROM chaos_transitions t
                         WHERE t.job_id = d.job_id AND t.new_status = 'PROCESSING'),
                        'infinity') AS until
        FROM chaos_debounce d GROUP BY d.key, d.job_id)
    SELECT count(*) FROM waits a JOIN waits b
        ON a.key = b.key AND a.id < b.id AND a.since < b.until AND b.since < a.until
"""

# Keys whose last enqueue's job was claimed before that enqueue, or never ended.
_LATE = """
    WITH last AS (SELECT DISTINCT ON (key) key, job_id, at FROM chaos_debounce
                  ORDER BY key, at DESC)
    SELECT count(*) FROM last l JOIN "WorkerJob" w ON w.id = l.job_id
    WHERE w.status NOT IN ('COMPLETED', 'DEAD_LETTER')
       OR (SELECT min(t.at) FROM chaos_transitions t
           WHERE t.job_id = l.job_id AND t.new_status = 'PROCESSING') < l.at
"""


def enqueue(soak: Any, conn: Any) -> int:
    rng = soak.job_rng
    made = rng.randint(1, 3)
    for _ in range(made):
        key = f"deb:{rng.randrange(KEYS)}"
        job_id = skiplock.enqueue(
            "CHAOS_WORK", soak.payload(), max_attempts=8, debounce=rng.choice((0.2, 0.5, 1)),
            debounce_key=key, debounce_mode=rng.choice(("delay", "replace")), conn=conn)
        conn.execute(_RECORD, {"key": key, "job_id": job_id})
    return made


def check(soak: Any, conn: Any) -> tuple[bool, str]:
    exists = conn.execute(text("SELECT to_regclass('chaos_debounce') IS NOT NULL")).scalar()
    if not exists:
        return True, "debounce: no debounced enqueue was made"
    enqueues, jobs = conn.execute(text(
        "SELECT count(*), count(DISTINCT job_id) FROM chaos_debounce")).one()
    overlaps = int(conn.execute(text(_OVERLAPS)).scalar() or 0)
    late = int(conn.execute(text(_LATE)).scalar() or 0)
    ok = overlaps == 0 and late == 0
    return ok, (f"debounce: {enqueues} enqueues folded into {jobs} jobs; two pending at once "
                f"{overlaps}; last enqueue not run after it {late}")


def held(conn: Any) -> int:
    return 0
