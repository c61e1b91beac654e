"""Every read and write of the domain tables, on a caller's connection.

Nothing here opens or commits a transaction: the handlers run these inside
`queue_core.database.db.transaction()`, so a step's writes commit with the enqueue of
the next job and the completion of its own, or not at all. Writes are
`INSERT … ON CONFLICT` on each table's unique key, so a step that runs again
(after a crash, or because it was enqueued twice) updates the row it made
instead of adding a second one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from skiplock.handlers.domain.model import Observation, PatternRule, Reading
from skiplock.handlers.domain.periods import load_timezone
from skiplock.handlers.domain.plans import Plan
from skiplock.handlers.domain.schema import (
    daily_plan,
    event,
    insight,
    interpretation,
    pattern,
    review,
    uom_entry,
    uom_suggestion,
    user,
)
from skiplock.handlers.domain.uom import Suggestion

# xmax is 0 on a row version this statement inserted, and set on one an ON CONFLICT updated.
_INSERTED = text("xmax = 0")


@dataclass(frozen=True)
class UserRow:
    id: str
    name: str | None
    timezone: str


@dataclass(frozen=True)
class EventRow:
    id: str
    user_id: str
    text: str
    occurred_at: datetime


@dataclass(frozen=True)
class ReviewRow:
    id: str
    user_id: str
    type: str
    period_key: str
    timezone: str
    summary: dict[str, Any]


@dataclass(frozen=True)
class PlanRow:
    id: str
    user_id: str
    review_id: str | None
    target_date: date
    items: list[dict[str, Any]]


# -- users and events ------------------------------------------------------------------------


def create_user(conn: Connection, name: str | None, timezone: str,
                user_id: str | None = None) -> str:
    """A new user; ValueError if `timezone` is not an IANA name (their jobs could never run)."""
    load_timezone(timezone)
    values: dict[str, Any] = {"name": name, "timezone": timezone}
    if user_id:
        values["id"] = user_id
    return str(conn.execute(insert(user).values(**values).returning(user.c.id)).scalar_one())


def get_user(conn: Connection, user_id: str) -> UserRow | None:
    row = conn.execute(select(user.c.id, user.c.name, user.c.timezone)
                       .where(user.c.id == user_id)).first()
    return UserRow(*row) if row else None


def add_events(conn: Connection, user_id: str, entries: Iterable[tuple[datetime, str]]) -> (
        list[str]):
    rows = [{"userId": user_id, "occurredAt": at, "text": body} for at, body in entries]
    if not rows:
        return []
    result = conn.execute(insert(event).returning(event.c.id, sort_by_parameter_order=True), rows)
    return [str(r) for r in result.scalars()]


def get_event(conn: Connection, event_id: str) -> EventRow | None:
    row = conn.execute(select(event.c.id, event.c.userId, event.c.text, event.c.occurredAt)
                       .where(event.c.id == event_id)).first()
    return EventRow(*row) if row else None


# -- interpretations -------------------------------------------------------------------------


def save_interpretation(conn: Connection, ev: EventRow, reading: Reading, method: str) -> str:
    values = {
        "moodScore": reading.mood_score, "mood": reading.mood, "energy": reading.energy,
        "tags": list(reading.tags), "people": list(reading.people),
        "timeOfDay": reading.time_of_day, "localDate": reading.local_date, "method": method,
    }
    stmt = insert(interpretation).values(eventId=ev.id, userId=ev.user_id, **values)
    upsert = stmt.on_conflict_do_update(
        constraint="Interpretation_eventId_key",
        set_={**{k: stmt.excluded[k] for k in values}, "updatedAt": func.now()},
    ).returning(interpretation.c.id)
    return str(conn.execute(upsert).scalar_one())


def interpretation_exists(conn: Connection, interpretation_id: str, event_id: str) -> bool:
    return conn.execute(select(interpretation.c.id).where(
        interpretation.c.id == interpretation_id, interpretation.c.eventId == event_id,
    )).first() is not None


def _reading(row: Any) -> Reading:
    return Reading(
        mood_score=row.moodScore, mood=row.mood, energy=row.energy, tags=tuple(row.tags),
        people=tuple(row.people), time_of_day=row.timeOfDay, local_date=row.localDate,
    )


# Patterns and insights describe the user as they are lately; the window also bounds the work
# of a step for a user with years of entries.
OBSERVATION_WINDOW = 2000


def load_observations(conn: Connection, user_id: str,
                      limit: int = OBSERVATION_WINDOW) -> list[Observation]:
    """The user's most recent interpreted events (at most `limit`), oldest first."""
    rows = conn.execute(
        select(event.c.id.label("eventId"), event.c.text, event.c.occurredAt,
               interpretation.c.id.label("interpretationId"), interpretation.c.moodScore,
               interpretation.c.mood, interpretation.c.energy, interpretation.c.tags,
               interpretation.c.people, interpretation.c.timeOfDay, interpretation.c.localDate)
        .join(interpretation, interpretation.c.eventId == event.c.id)
        .where(event.c.userId == user_id)
        .order_by(event.c.occurredAt.desc(), event.c.id.desc())
        .limit(limit)
    )
    return [Observation(r.eventId, _reading(r), r.text, r.interpretationId, r.occurredAt)
            for r in reversed(rows.all())]


def load_period_events(conn: Connection, user_id: str, start: datetime, end: datetime) -> (
        list[tuple[EventRow, Reading | None]]):
    """The user's events in [start, end), each with its stored reading if it has one."""
    rows = conn.execute(
        select(event.c.id, event.c.userId, event.c.text, event.c.occurredAt,
               interpretation.c.moodScore, interpretation.c.mood, interpretation.c.energy,
               interpretation.c.tags, interpretation.c.people, interpretation.c.timeOfDay,
               interpretation.c.localDate)
        .outerjoin(interpretation, interpretation.c.eventId == event.c.id)
        .where(event.c.userId == user_id, event.c.occurredAt >= start, event.c.occurredAt < end)
        .order_by(event.c.occurredAt, event.c.id)
    )
    return [(EventRow(r.id, r.userId, r.text, r.occurredAt),
             _reading(r) if r.mood is not None else None) for r in rows]


# -- patterns --------------------------------------------------------------------------------


def lock_user(conn: Connection, scope: str, user_id: str) -> None:
    """Serialise one step per user until the transaction ends.

    Two children mining the same user's patterns at once would both see a rule
    as new and both report it created; the lock makes the second wait and then
    see the first's rows (each statement reads what committed before it).
    """
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:scope || ':' || :u))"),
                 {"scope": f"skiplock:{scope}", "u": user_id})


def lock_user_patterns(conn: Connection, user_id: str) -> None:
    lock_user(conn, "patterns", user_id)


def _rule(row: Any) -> PatternRule:
    return PatternRule(
        key=row.key, tag=row.tag, context=tuple(row.context), outcome=row.outcome,
        support=row.support, occurrences=row.occurrences, confidence=row.confidence,
        lift=row.lift, description=row.description, evidence=tuple(row.evidence),
        id=row.id, status=row.status,
    )


def load_patterns(conn: Connection, user_id: str, active_only: bool = False) -> (
        dict[str, PatternRule]):
    query = select(pattern).where(pattern.c.userId == user_id).order_by(pattern.c.key)
    if active_only:
        query = query.where(pattern.c.status == "ACTIVE")
    return {r.key: _rule(r) for r in conn.execute(query)}


def patterns_by_id(conn: Connection, user_id: str) -> dict[str, PatternRule]:
    return {r.id: r for r in load_patterns(conn, user_id).values() if r.id}


def save_pattern(conn: Connection, user_id: str, rule: PatternRule) -> tuple[str, bool]:
    """Insert or update the user's rule; (id, whether this statement inserted it)."""
    values = {
        "tag": rule.tag, "context": list(rule.context), "outcome": rule.outcome,
        "support": rule.support, "occurrences": rule.occurrences,
        "confidence": rule.confidence, "lift": rule.lift, "description": rule.description,
        "evidence": list(rule.evidence), "status": rule.status,
    }
    stmt = insert(pattern).values(userId=user_id, key=rule.key, **values)
    upsert = stmt.on_conflict_do_update(
        constraint="Pattern_userId_key_key",
        set_={**{k: stmt.excluded[k] for k in values}, "updatedAt": func.now()},
    ).returning(pattern.c.id, _INSERTED)
    row = conn.execute(upsert).one()
    return str(row[0]), bool(row[1])


def pattern_exists(conn: Connection, user_id: str, pattern_id: str) -> bool:
    return conn.execute(select(pattern.c.id).where(
        pattern.c.id == pattern_id, pattern.c.userId == user_id)).first() is not None


def set_pattern_status(conn: Connection, pattern_id: str, status: str) -> None:
    conn.execute(update(pattern).where(pattern.c.id == pattern_id)
                 .values(status=status, updatedAt=func.now()))


# -- insights --------------------------------------------------------------------------------


def save_insight(conn: Connection, user_id: str, values: Mapping[str, Any]) -> bool:
    """Insert the insight unless the user already has this answer; whether it was new."""
    stmt = (insert(insight).values(userId=user_id, **values)
            .on_conflict_do_nothing(constraint="Insight_userId_questionKey_answerKey_key")
            .returning(insight.c.id))
    return conn.execute(stmt).first() is not None


# -- reviews ---------------------------------------------------------------------------------


def save_review(conn: Connection, user_id: str, review_type: str, period_key: str,
                timezone: str, start: datetime, end: datetime, summary: dict[str, Any]) -> str:
    values = {"timezone": timezone, "periodStart": start, "periodEnd": end, "summary": summary}
    stmt = insert(review).values(userId=user_id, type=review_type, periodKey=period_key,
                                 **values)
    upsert = stmt.on_conflict_do_update(
        constraint="Review_userId_type_periodKey_key",
        set_={**{k: stmt.excluded[k] for k in values}, "updatedAt": func.now()},
    ).returning(review.c.id)
    return str(conn.execute(upsert).scalar_one())


def get_review(conn: Connection, review_id: str) -> ReviewRow | None:
    row = conn.execute(select(review.c.id, review.c.userId, review.c.type, review.c.periodKey,
                              review.c.timezone, review.c.summary)
                       .where(review.c.id == review_id)).first()
    return ReviewRow(*row) if row else None


# -- plans -----------------------------------------------------------------------------------


def save_plan(conn: Connection, user_id: str, review_id: str, plan: Plan) -> str:
    values = {"reviewId": review_id, "focus": plan.focus,
              "items": [item.to_dict() for item in plan.items]}
    stmt = insert(daily_plan).values(userId=user_id, targetDate=plan.target_date, **values)
    upsert = stmt.on_conflict_do_update(
        constraint="DailyPlan_userId_targetDate_key",
        set_={**{k: stmt.excluded[k] for k in values}, "updatedAt": func.now()},
    ).returning(daily_plan.c.id)
    return str(conn.execute(upsert).scalar_one())


def get_plan(conn: Connection, plan_id: str) -> PlanRow | None:
    row = conn.execute(select(daily_plan.c.id, daily_plan.c.userId, daily_plan.c.reviewId,
                              daily_plan.c.targetDate, daily_plan.c["items"])
                       .where(daily_plan.c.id == plan_id)).first()
    return PlanRow(*row) if row else None


# -- the operating manual --------------------------------------------------------------------


def manual_keys(conn: Connection, user_id: str) -> set[str]:
    return set(conn.execute(select(uom_entry.c.patternKey)
                            .where(uom_entry.c.userId == user_id)).scalars())


def proposed_keys(conn: Connection, user_id: str, except_plan: str) -> set[str]:
    """Pattern keys that suggestions of other plans propose and the user has not answered."""
    return set(conn.execute(
        select(uom_suggestion.c.patternKey).where(and_(
            uom_suggestion.c.userId == user_id,
            uom_suggestion.c.status == "PROPOSED",
            uom_suggestion.c.dailyPlanId != except_plan,
        ))).scalars())


def save_suggestion(conn: Connection, user_id: str, plan_id: str, suggestion: Suggestion) -> (
        str):
    rule = suggestion.pattern
    values = {
        "needed": suggestion.needed,
        "status": "PROPOSED" if suggestion.needed else "NONE_NEEDED",
        "patternId": rule.id if rule else None,
        "patternKey": rule.key if rule else None,
        "statement": suggestion.statement,
        "reason": suggestion.reason,
    }
    stmt = insert(uom_suggestion).values(userId=user_id, dailyPlanId=plan_id, **values)
    upsert = stmt.on_conflict_do_update(
        constraint="UomSuggestion_dailyPlanId_key",
        set_={**{k: stmt.excluded[k] for k in values}, "updatedAt": func.now()},
    ).returning(uom_suggestion.c.id)
    return str(conn.execute(upsert).scalar_one())
