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

from skiplock.handlers.domain import sql, store
from skiplock.handlers.domain.periods import DAILY, WEEKLY, load_timezone, period_key, to_local
from skiplock.handlers.domain.samples import sample_entries
from skiplock.queue_core import enqueue_many
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.payloads import GENERATE_REVIEW, INTERPRET_EVENT


@dataclass(frozen=True)
class Seeded:
    user_id: str
    timezone: str
    first_day: date
    last_day: date
    events: int
    jobs: int


# The demo's user has a known id, so that the README's first enqueue can name it.
DEMO_USER = "demo"


def seed_demo(timezone: str, days: int, seed: int = 7, today: date | None = None,
              user_id: str = DEMO_USER) -> Seeded:
    """The user `user_id` with `days` of journal up to yesterday, and the first job of each chain.

    A user of that id made by an earlier demo is replaced, with what their
    chains made (the domain's rows go with the user) and their jobs that are
    not running."""
    tz = load_timezone(timezone)
    today = today or datetime.now(tz).date()
    last_day = today - timedelta(days=1)
    first_day = last_day - timedelta(days=days - 1)
    entries = sample_entries(tz, last_day, days, seed)
    with transaction() as conn:
        conn.execute(sql.FORGET_DEMO_JOBS, {"u": user_id})
        conn.execute(sql.FORGET_DEMO_USER, {"u": user_id})
        user_id = store.create_user(conn, "Demo", timezone, user_id=user_id)
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
        # A week's review waits for the daily reviews of its days (their positions in
        # `jobs`): the demo's fan-in. "run": a daily review that failed for good
        # leaves the weekly one to read the week's entries itself.
        dailies: list[int] = []
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
                job: dict[str, Any] = {
                    "type": GENERATE_REVIEW,
                    "payload": {"userId": user_id, "type": review_type, "periodKey": key,
                                "timezone": timezone},
                    "priority": -rank,
                    "idempotency_key": f"review:{user_id}:{review_type}:{key}",
                    "user_id": user_id,
                }
                if review_type == DAILY:
                    dailies.append(len(jobs))
                else:
                    job["depends_on"], job["on_parent_failure"] = dailies, "run"
                    dailies = []
                jobs.append(job)
        enqueue_many(jobs, conn=conn)
    return Seeded(user_id, timezone, first_day, last_day, len(event_ids), len(jobs))


def pending_jobs(user_id: str) -> int:
    """The user's jobs not settled yet (waiting, running, or waiting for a retry)."""
    with transaction() as conn:
        return int(conn.execute(sql.UNSETTLED_JOBS, {"u": user_id}).scalar_one())


def report(user_id: str) -> dict[str, Any]:
    """What each step produced for the user, and the timings of its jobs."""
    statements = {"timings": sql.JOB_TIMINGS, "fan_in": sql.WEEKLY_FAN_IN,
                  "moods": sql.MOODS, "patterns": sql.PATTERNS,
                  "insights": sql.INSIGHTS, "outcomes": sql.PATTERN_OUTCOMES,
                  "reviews": sql.REVIEWS, "plans": sql.PLANS, "suggestions": sql.SUGGESTIONS,
                  "errors": sql.DEAD_LETTERS}
    with transaction() as conn:
        return {name: list(conn.execute(statement, {"u": user_id}))
                for name, statement in statements.items()}


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
    if data.get("fan_in"):
        lines += ["", "fan-in: each WEEKLY review waited for its week's DAILY reviews"]
        lines += [f"  - {f.period}: {f.parents} daily reviews, then started "
                  f"{_gap(f.gap_ms)} after the last of them completed" for f in data["fan_in"]]
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


def _gap(ms: Any) -> str:
    return "?" if ms is None else f"{float(ms):.0f} ms"
