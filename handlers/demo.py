"""The demo: one user, a few weeks of journal, every chain run through the pool.

`seed_demo` writes the user and their entries and enqueues the first job of
each chain (an interpretation per entry, a review per day and per week) in one
transaction; `drained` says when the user's chains are all done; `report`
reads back what each step produced and how long its jobs took. The command
`skiplock demo` (skiplock/cli/demo.py) strings them together around
`pool.run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from handlers.domain import store
from handlers.domain.periods import DAILY, WEEKLY, load_timezone, period_key
from handlers.domain.samples import sample_entries
from queue_core import enqueue_many
from queue_core.db import transaction
from queue_core.payloads import GENERATE_REVIEW, INTERPRET_EVENT

INTERPRET_PRIORITY = 10  # claimed before the reviews, so those mostly find readings ready


@dataclass(frozen=True)
class Seeded:
    user_id: str
    timezone: str
    first_day: date
    last_day: date
    events: int
    jobs: int


def seed_demo(timezone: str, days: int, seed: int = 7, today: date | None = None) -> Seeded:
    tz = load_timezone(timezone)
    today = today or datetime.now(tz).date()
    last_day = today - timedelta(days=1)
    first_day = last_day - timedelta(days=days - 1)
    with transaction() as conn:
        user_id = store.create_user(conn, "Demo", timezone)
        event_ids = store.add_events(conn, user_id, sample_entries(tz, last_day, days, seed))
        jobs: list[dict[str, Any]] = [
            {"type": INTERPRET_EVENT, "payload": {"eventId": e}, "priority": INTERPRET_PRIORITY,
             "idempotency_key": f"interpret:{e}", "user_id": user_id}
            for e in event_ids
        ]
        days_list = [first_day + timedelta(days=i) for i in range(days)]
        weeks = sorted({period_key(WEEKLY, d) for d in days_list})
        for review_type, key in [(DAILY, d.isoformat()) for d in days_list] + [
                (WEEKLY, w) for w in weeks]:
            jobs.append({
                "type": GENERATE_REVIEW,
                "payload": {"userId": user_id, "type": review_type, "periodKey": key,
                            "timezone": timezone},
                "idempotency_key": f"review:{user_id}:{review_type}:{key}",
                "user_id": user_id,
            })
        enqueue_many(jobs, conn=conn)
    return Seeded(user_id, timezone, first_day, last_day, len(event_ids), len(jobs))


def pending_jobs(user_id: str) -> int:
    """The user's jobs not settled yet (waiting, running, or waiting for a retry)."""
    with transaction() as conn:
        return int(conn.execute(text(
            """SELECT count(*) FROM "WorkerJob"
               WHERE "userId" = :u AND status IN ('PENDING', 'PROCESSING')"""),
            {"u": user_id}).scalar_one())


def _all(conn: Connection, sql: str, **params: Any) -> list[Any]:
    return list(conn.execute(text(sql), params))


def report(user_id: str) -> dict[str, Any]:
    """What each step produced for the user, and the timings of its jobs."""
    with transaction() as conn:
        timings = _all(conn, """
            SELECT type, count(*) AS jobs,
                   count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
                   count(*) FILTER (WHERE status = 'DEAD_LETTER') AS dead,
                   sum(attempts) - count(*) AS retries,
                   avg(extract(epoch FROM "completedAt" - "startedAt")) * 1000 AS avg_ms,
                   max(extract(epoch FROM "completedAt" - "startedAt")) * 1000 AS max_ms,
                   extract(epoch FROM max("completedAt") - min("createdAt")) AS span_s
            FROM "WorkerJob" WHERE "userId" = :u GROUP BY type
            ORDER BY min("createdAt"), type""", u=user_id)
        moods = _all(conn, """SELECT mood, count(*) AS n FROM "Interpretation"
                              WHERE "userId" = :u GROUP BY mood ORDER BY mood""", u=user_id)
        patterns = _all(conn, """SELECT description, support, confidence, status FROM "Pattern"
                                 WHERE "userId" = :u
                                 ORDER BY status, support * confidence DESC, key""", u=user_id)
        insights = _all(conn, """SELECT question, answer FROM "Insight" WHERE "userId" = :u
                                 ORDER BY "createdAt", "questionKey" """, u=user_id)
        reviews = _all(conn, """SELECT type, "periodKey", summary->>'headline' AS headline
                                FROM "Review" WHERE "userId" = :u
                                ORDER BY type, "periodKey" """, u=user_id)
        plans = _all(conn, """SELECT "targetDate", focus, items FROM "DailyPlan"
                              WHERE "userId" = :u ORDER BY "targetDate" """, u=user_id)
        suggestions = _all(conn, """
            SELECT p."targetDate", s.status, s.statement, s.reason FROM "UomSuggestion" s
            JOIN "DailyPlan" p ON p.id = s."dailyPlanId"
            WHERE s."userId" = :u ORDER BY p."targetDate" """, u=user_id)
        errors = _all(conn, """SELECT type, "lastError" FROM "WorkerJob"
                               WHERE "userId" = :u AND status = 'DEAD_LETTER'""", u=user_id)
    return {"timings": timings, "moods": moods, "patterns": patterns, "insights": insights,
            "reviews": reviews, "plans": plans, "suggestions": suggestions, "errors": errors}


def format_report(seeded: Seeded, data: dict[str, Any], wall_s: float) -> list[str]:
    lines = [f"user {seeded.user_id} ({seeded.timezone}): {seeded.events} journal entries "
             f"from {seeded.first_day} to {seeded.last_day}", ""]
    lines.append(f"{'job type':<24}{'jobs':>6}{'done':>6}{'dead':>6}{'retries':>9}"
                 f"{'avg ms':>9}{'max ms':>9}")
    total = 0
    for t in data["timings"]:
        total += t.jobs
        lines.append(f"{t.type:<24}{t.jobs:>6}{t.completed:>6}{t.dead:>6}{t.retries or 0:>9}"
                     f"{float(t.avg_ms or 0):>9.1f}{float(t.max_ms or 0):>9.1f}")
    lines.append(f"{total} jobs in {wall_s:.1f}s ({total / wall_s if wall_s else 0:.0f} jobs/s)")
    lines += ["", "INTERPRET_EVENT: " + ", ".join(f"{m.n} {m.mood}" for m in data["moods"])]
    active = [p for p in data["patterns"] if p.status == "ACTIVE"]
    lines += ["", f"DETECT_PATTERNS: {len(active)} active patterns, strongest first"]
    lines += [f"  - {p.description} (confidence {p.confidence:.0%})" for p in active[:6]]
    lines += ["", f"GENERATE_INSIGHTS: {len(data['insights'])} insights"]
    lines += [f"  - {i.question} {i.answer}" for i in data["insights"]]
    daily = [r for r in data["reviews"] if r.type == DAILY]
    weekly = [r for r in data["reviews"] if r.type == WEEKLY]
    lines += ["", f"GENERATE_REVIEW: {len(daily)} daily and {len(weekly)} weekly reviews"]
    lines += [f"  - {r.periodKey}: {r.headline}" for r in weekly + daily[-3:]]
    lines += ["", f"GENERATE_TOMORROW_PLAN: {len(data['plans'])} plans; the last one:"]
    if data["plans"]:
        last = data["plans"][-1]
        lines.append(f"  {last.targetDate}: {last.focus}")
        lines += [f"  - {item['text']}" for item in last.items]
    proposed = [s for s in data["suggestions"] if s.status == "PROPOSED"]
    lines += ["", f"SUGGEST_UOM_UPDATE: {len(proposed)} updates proposed, "
              f"{len(data['suggestions']) - len(proposed)} plans needed none"]
    lines += [f"  - for {s.targetDate}: {s.statement}" for s in proposed]
    if data["errors"]:
        lines += ["", "dead letters:"] + [f"  - {e.type}: {e.lastError}" for e in data["errors"]]
    return lines
