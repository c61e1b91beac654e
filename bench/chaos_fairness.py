"""The chaos soak's fairness workload (bench/chaos.py, FLOWS): bursts of a heavy fair key
(weight 1, window 10: a burst is bigger) and a few jobs of a light key (weight 3).

Invariants: every fair job ends (none is left waiting its turn after the drain, so
no fault strands a key with jobs waiting and nothing to let them in), and no key
ever has more jobs in the claim's index than its window grown while it was alone
(GROWTH x its window): sampled at every top-up, in one snapshot, while the faults
run (alembic/versions/0021_fairness.py). That a grown key is held to its plain window
again once another key waits is tested in tests/features/test_fairness.py: a sample
here cannot tell whether the other key waited all along between two top-ups.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from skiplock.queue_core import enqueue_many
from skiplock.queue_core.features.fairness import DEFAULT_WINDOW, GROWTH

WEIGHTS = {"chaos:heavy": 1, "chaos:light": 3}
_worst: dict[str, dict[str, int]] = {}  # run -> key -> most jobs seen in the index at once


def enqueue(soak: Any, conn: Any) -> int:
    seen = _worst.setdefault(soak.run_id, {})
    if not seen:
        for key, weight in WEIGHTS.items():
            conn.execute(text("""INSERT INTO "WorkerFairKey" (key, weight) VALUES (:k, :w)
                                 ON CONFLICT (key) DO UPDATE SET weight = EXCLUDED.weight"""),
                         {"k": key, "w": weight})
            seen[key] = 0
    for key, n in conn.execute(text(
            """SELECT "fairKey", count(*) FROM "WorkerJob"
               WHERE status = 'PENDING' AND "heldBack" IS NULL AND "fairKey" IS NOT NULL
               GROUP BY 1""")):
        seen[key] = max(seen.get(key, 0), int(n))
    rng = soak.job_rng
    if rng.random() < 0.5:
        return 0
    jobs = [{"type": "CHAOS_WORK", "payload": soak.payload(), "max_attempts": 8,
             "fair_key": "chaos:heavy"} for _ in range(rng.randint(12, 25))]
    jobs += [{"type": "CHAOS_WORK", "payload": soak.payload(), "max_attempts": 8,
              "fair_key": "chaos:light"} for _ in range(rng.randint(0, 2))]
    enqueue_many(jobs, conn=conn)
    return len(jobs)


def check(soak: Any, conn: Any) -> tuple[bool, str]:
    unended = int(conn.execute(text(
        """SELECT count(*) FROM "WorkerJob" WHERE "fairKey" IS NOT NULL
           AND status IN ('PENDING', 'PROCESSING')""")).scalar() or 0)
    total = int(conn.execute(text(
        'SELECT count(*) FROM "WorkerJob" WHERE "fairKey" IS NOT NULL')).scalar() or 0)
    seen = _worst.get(soak.run_id, {})
    over = {k: n for k, n in seen.items() if n > WEIGHTS.get(k, 1) * DEFAULT_WINDOW * GROWTH}
    ok = not unended and not over
    return ok, (f"fairness: {total} fair jobs, {unended} not ended; most in the index at "
                f"once {seen} (windows {({k: w * DEFAULT_WINDOW for k, w in WEIGHTS.items()})}, "
                f"x{GROWTH} while alone)"
                + (f"; WINDOW EXCEEDED {over}" if over else ""))


def held(conn: Any) -> int:
    return 0  # no fair job rightly stays pending after the drain
