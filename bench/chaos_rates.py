"""Rate limits in the chaos soak (bench/chaos.py FLOWS): a window is never exceeded.

Each top-up enqueues a few CHAOS_WORK jobs with a rate of 3 per 2 seconds on one of
three keys; kills, rescues and retries make some of them start more than once, and
each start counts. Every start (PENDING to PROCESSING) is recorded by a trigger of
this module's own, with the claim's statement time (the job's "startedAt", which
is what the limit counts); a start whose transaction rolls back leaves no record,
as it started nothing. The invariant: for each key, no four starts within any two
seconds, i.e. the (i+3)-th start of a key is at least 2 s after the i-th.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import text

COUNT, PERIOD_S = 3, 2
RATE = f"{COUNT}/{PERIOD_S}s"
KEYS = ("chaos:a", "chaos:b", "chaos:c")

_RECORDER = [
    """CREATE TABLE IF NOT EXISTS chaos_rate_starts (job_id text NOT NULL, key text NOT NULL,
       started timestamptz NOT NULL)""",
    """CREATE OR REPLACE FUNCTION chaos_rate_start() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO chaos_rate_starts VALUES (NEW.id, NEW."rateKey", NEW."startedAt");
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER chaos_rate_start AFTER UPDATE OF status ON "WorkerJob" FOR EACH ROW
       WHEN (NEW."rateKey" IS NOT NULL AND OLD.status = 'PENDING'
             AND NEW.status = 'PROCESSING')
       EXECUTE FUNCTION chaos_rate_start()""",
]


def enqueue(soak: Any, conn: Any) -> int:
    """Two to four rate-limited jobs on one key, in the top-up's transaction."""
    from skiplock.queue_core import enqueue_many

    if conn.execute(text("SELECT to_regclass('chaos_rate_starts')")).scalar() is None:
        for statement in _RECORDER:
            conn.execute(text(statement))
    rng = soak.job_rng
    key = rng.choice(KEYS)
    n = rng.randint(2, 4)
    enqueue_many([{"type": "CHAOS_WORK", "payload": soak.payload(), "max_attempts": 8,
                   "rate": RATE, "rate_key": key} for _ in range(n)], conn=conn)
    return n


def check(soak: Any, conn: Any) -> tuple[bool, str]:
    if conn.execute(text("SELECT to_regclass('chaos_rate_starts')")).scalar() is None:
        return True, "rates: no rate-limited job was enqueued"
    starts: dict[str, list[Any]] = defaultdict(list)
    for key, started in conn.execute(text(
            "SELECT key, started FROM chaos_rate_starts ORDER BY key, started")):
        starts[key].append(started)
    period = timedelta(seconds=PERIOD_S)
    exceeded = [(key, times[i], times[i + COUNT]) for key, times in starts.items()
                for i in range(len(times) - COUNT) if times[i + COUNT] - times[i] < period]
    waiting = conn.execute(text(
        """SELECT count(*) FROM "WorkerJob" WHERE "rateKey" IS NOT NULL
           AND status IN ('PENDING', 'PROCESSING')""")).scalar()
    total = sum(len(t) for t in starts.values())
    line = (f"rates ({RATE} on {len(starts)} keys): {total} starts, windows exceeded "
            f"{len(exceeded)}, left unfinished {waiting}")
    for key, first, last in exceeded[:5]:
        line += f"\n  EXCEEDED {key}: {COUNT + 1} starts from {first} to {last}"
    return not exceeded and not waiting, line


def held(conn: Any) -> int:
    """None: every rate-limited job runs once its window allows."""
    return 0
