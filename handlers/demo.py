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
from handlers.domain.periods import DAILY, WEEKLY, load_timezone, period_key, to_local
from handlers.domain.samples import sample_entries
from queue_core import enqueue_many
from queue_core.db import transaction
from queue_core.payloads import GENERATE_REVIEW, INTERPRET_EVENT


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
    entries = sample_entries(tz, last_day, days, seed)
    with transaction() as conn:
        user_id = store.create_user(conn, "Demo", timezone)
        event_ids = store.add_events(conn, user_id, entries)
        # Replay the journal in the order it was written: the first jobs of the chains get
        # falling priorities (entry by entry, each day's review after its last entry), and
        # the jobs they chain (priority 0) run before the next entry. Patterns then emerge,
        # evolve and get reinforced as they would have, day after day.
        by_day: dict[date, list[str]] = {}
        for event_id, (at, _) in zip(event_ids, entries, strict=True):
            by_day.setdefault(to_local(at, tz).date(), []).append(event_id)
        jobs: list[dict[str, Any]] = []
        rank = 0
        for day in (first_day + timedelta(days=i) for i in range(days)):
            for event_id in by_day.get(day, []):
                rank += 1
                jobs.append({"type": INTERPRET_EVENT, "payload": {"eventId": event_id},
                             "priority": -rank, "idempotency_key": f"interpret:{event_id}",
                             "user_id": user_id})
            reviews = [(DAILY, day.isoformat())]
            if day.isoweekday() == 7 or day == last_day:
                reviews.append((WEEKLY, period_key(WEEKLY, day)))
            for review_type, key in reviews:
                rank += 1
                jobs.append({
                    "type": GENERATE_REVIEW,
                    "payload": {"userId": user_id, "type": review_type, "periodKey": key,
                                "timezone": timezone},
                    "priority": -rank,
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
        # An answer that changed is a new insight: show the latest one of each question.
        insights = _all(conn, """SELECT DISTINCT ON ("questionKey") question, answer,
                                        count(*) OVER () AS total
                                 FROM "Insight" WHERE "userId" = :u
                                 ORDER BY "questionKey", "createdAt" DESC, id""", u=user_id)
        reviews = _all(conn, """SELECT type, "periodKey", summary->>'headline' AS headline
                                FROM "Review" WHERE "userId" = :u
                                ORDER BY type, "periodKey" """, u=user_id)
        plans = _all(conn, """SELECT "targetDate", focus, items FROM "DailyPlan"
                              WHERE "userId" = :u ORDER BY "targetDate" """, u=user_id)
        suggestions = _all(conn, """
            SELECT p."targetDate", s.status, s.statement, s.reason FROM "UomSuggestion" s
            JOIN "DailyPlan" p ON p.id = s."dailyPlanId"
            WHERE s."userId" = :u ORDER BY p."targetDate" """, u=user_id)
        outcomes = _all(conn, """
            SELECT result->>'outcome' AS outcome, count(*) AS n FROM "WorkerJob"
            WHERE "userId" = :u AND type = 'DETECT_PATTERNS' AND status = 'COMPLETED'
            GROUP BY 1 ORDER BY 2 DESC, 1""", u=user_id)
        errors = _all(conn, """SELECT type, "lastError" FROM "WorkerJob"
                               WHERE "userId" = :u AND status = 'DEAD_LETTER'""", u=user_id)
    return {"timings": timings, "moods": moods, "patterns": patterns, "insights": insights,
            "outcomes": outcomes,
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
    runs = ", ".join(f"{o.n} {o.outcome}" for o in data["outcomes"])
    lines += ["", f"DETECT_PATTERNS: {runs}; {len(active)} active patterns, strongest first"]
    lines += [f"  - {p.description} (confidence {p.confidence:.0%})" for p in active[:6]]
    total = data["insights"][0].total if data["insights"] else 0
    lines += ["", f"GENERATE_INSIGHTS: {total} insights; the latest answer to each question"]
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
