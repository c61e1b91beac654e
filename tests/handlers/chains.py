"""What a finished run of the chains must look like, read from the tables.

Shared by the inline chain test and the end-to-end test through the pool: the
same facts whatever ran the jobs.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import text

from skiplock import handlers
from skiplock.handlers.demo import Seeded
from skiplock.handlers.domain.periods import load_timezone, to_local
from skiplock.queue_core import claim, complete, fail
from skiplock.queue_core.database import db


def drain_inline(worker_id: str = "inline", max_jobs: int = 10_000) -> int:
    """Run ready jobs one by one in this process as a child would, until none is ready."""
    done = 0
    while done < max_jobs:
        jobs = claim(worker_id)
        if not jobs:
            return done
        job = jobs[0]
        fn = handlers.get_handler(job.type)
        assert fn is not None, job.type
        with db.connect() as conn, db.bind_job_connection(conn):
            result = fn(job.payload, job.id)
            if result.success:
                assert complete(job, result.data, conn=conn)
        if not result.success:
            fail(job, result.error, retry=result.should_retry)
        done += 1
    raise AssertionError("the chains did not drain")


def _rows(sql: str, **params: Any) -> list[Any]:
    with db.get_engine().connect() as conn:
        return list(conn.execute(text(sql), params))


def assert_chains_complete(seeded: Seeded) -> None:
    user = seeded.user_id
    tz = load_timezone(seeded.timezone)
    statuses = _rows("""SELECT type, status::text AS status, count(*) AS n FROM "WorkerJob"
                        WHERE "userId" = :u GROUP BY 1, 2""", u=user)
    assert {s.status for s in statuses} == {"COMPLETED"}, statuses

    # Every event interpreted exactly once, on its local date.
    readings = _rows("""SELECT e.id, e."occurredAt", count(i.id) AS n, min(i."localDate") AS day
                        FROM "Event" e LEFT JOIN "Interpretation" i ON i."eventId" = e.id
                        WHERE e."userId" = :u GROUP BY e.id""", u=user)
    assert len(readings) == seeded.events
    assert all(r.n == 1 for r in readings)
    assert all(r.day == to_local(r.occurredAt, tz).date() for r in readings)
    # One DETECT_PATTERNS per event, one job per idempotency key.
    counts = {s.type: 0 for s in statuses}
    for s in statuses:
        counts[s.type] += s.n
    assert counts["INTERPRET_EVENT"] == counts["DETECT_PATTERNS"] == seeded.events
    duplicates = _rows("""SELECT "idempotencyKey" FROM "WorkerJob" WHERE "userId" = :u
                          GROUP BY 1 HAVING count(*) > 1""", u=user)
    assert duplicates == []

    # Each daily review planned the next local day, and each plan got its suggestion row.
    days = (seeded.last_day - seeded.first_day).days + 1
    daily = _rows("""SELECT r.id, r."periodKey", r.summary, p."targetDate", s.status
                     FROM "Review" r
                     JOIN "DailyPlan" p ON p."reviewId" = r.id
                     JOIN "UomSuggestion" s ON s."dailyPlanId" = p.id
                     WHERE r."userId" = :u AND r.type = 'DAILY'""", u=user)
    assert len(daily) == days
    assert sorted(r.periodKey for r in daily) == [
        (seeded.first_day + timedelta(days=i)).isoformat() for i in range(days)]
    for review in daily:
        assert review.targetDate == date.fromisoformat(review.periodKey) + timedelta(days=1)
    assert sum(r.summary["eventCount"] for r in daily) == seeded.events
    assert counts["GENERATE_TOMORROW_PLAN"] == counts["SUGGEST_UOM_UPDATE"] == days
    # Pattern mining found something, and its insights were stored once each.
    assert _rows('SELECT 1 FROM "Pattern" WHERE "userId" = :u', u=user)
    insight_dups = _rows("""SELECT "questionKey", "answerKey" FROM "Insight" WHERE "userId" = :u
                            GROUP BY 1, 2 HAVING count(*) > 1""", u=user)
    assert insight_dups == []
