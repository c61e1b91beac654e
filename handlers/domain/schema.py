"""The domain's tables, in the original service's Prisma style (quoted PascalCase tables,
camelCase columns, text ids).

The migration `alembic/versions/demo_0001_domain.py` is the authority; these
`Table` objects mirror it for the queries in `store.py` (a test checks that
the two agree). Every output table has the unique key that makes its step
idempotent: one interpretation per event, one pattern per user and rule, one
insight per user, question and answer, one review per user, type and period,
one plan per user and date, one suggestion per plan, one manual entry per
user and pattern.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

metadata = MetaData()

_NEW_ID = text("gen_random_uuid()::text")


def _id() -> Column:
    return Column("id", Text, primary_key=True, server_default=_NEW_ID)


def _user_id() -> Column:
    return Column("userId", Text, ForeignKey("User.id", ondelete="CASCADE", onupdate="CASCADE"),
                  nullable=False)


def _created() -> Column:
    return Column("createdAt", TIMESTAMP(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Column:
    return Column("updatedAt", TIMESTAMP(timezone=True), nullable=False, server_default=func.now())


user = Table(
    "User", metadata,
    _id(),
    Column("name", Text),
    Column("timezone", Text, nullable=False, server_default="UTC"),  # IANA name
    _created(),
)

event = Table(
    "Event", metadata,
    _id(),
    _user_id(),
    Column("text", Text, nullable=False),
    Column("occurredAt", TIMESTAMP(timezone=True), nullable=False),
    _created(),
    Index("Event_userId_occurredAt_idx", "userId", "occurredAt"),
)

interpretation = Table(
    "Interpretation", metadata,
    _id(),
    Column("eventId", Text, ForeignKey("Event.id", ondelete="CASCADE"), nullable=False),
    _user_id(),
    Column("moodScore", Float, nullable=False),
    Column("mood", Text, nullable=False),
    Column("energy", Text, nullable=False),
    Column("tags", JSONB, nullable=False),
    Column("people", JSONB, nullable=False),
    Column("timeOfDay", Text, nullable=False),
    Column("localDate", Date, nullable=False),
    Column("method", Text, nullable=False),
    _created(),
    _updated(),
    UniqueConstraint("eventId", name="Interpretation_eventId_key"),
    Index("Interpretation_userId_localDate_idx", "userId", "localDate"),
)

pattern = Table(
    "Pattern", metadata,
    _id(),
    _user_id(),
    Column("key", Text, nullable=False),
    Column("tag", Text, nullable=False),
    Column("context", JSONB, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("support", Integer, nullable=False),
    Column("occurrences", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("lift", Float, nullable=False),
    Column("description", Text, nullable=False),
    Column("evidence", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="ACTIVE"),
    _created(),
    _updated(),
    UniqueConstraint("userId", "key", name="Pattern_userId_key_key"),
    CheckConstraint("status IN ('ACTIVE', 'FADED')", name="Pattern_status_check"),
)

insight = Table(
    "Insight", metadata,
    _id(),
    _user_id(),
    Column("questionKey", Text, nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("answerKey", Text, nullable=False),
    Column("evidenceCount", Integer, nullable=False),
    Column("patternId", Text, ForeignKey("Pattern.id", ondelete="SET NULL")),
    Column("triggerType", Text, nullable=False),
    Column("eventId", Text, ForeignKey("Event.id", ondelete="SET NULL")),
    _created(),
    UniqueConstraint("userId", "questionKey", "answerKey",
                     name="Insight_userId_questionKey_answerKey_key"),
    Index("Insight_eventId_idx", "eventId"),
    Index("Insight_patternId_idx", "patternId"),
)

review = Table(
    "Review", metadata,
    _id(),
    _user_id(),
    Column("type", Text, nullable=False),
    Column("periodKey", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("periodStart", TIMESTAMP(timezone=True), nullable=False),
    Column("periodEnd", TIMESTAMP(timezone=True), nullable=False),
    Column("summary", JSONB, nullable=False),
    _created(),
    _updated(),
    UniqueConstraint("userId", "type", "periodKey", name="Review_userId_type_periodKey_key"),
    CheckConstraint("type IN ('DAILY', 'WEEKLY', 'MONTHLY')", name="Review_type_check"),
)

daily_plan = Table(
    "DailyPlan", metadata,
    _id(),
    _user_id(),
    Column("reviewId", Text, ForeignKey("Review.id", ondelete="SET NULL")),
    Column("targetDate", Date, nullable=False),
    Column("focus", Text, nullable=False),
    Column("items", JSONB, nullable=False),
    _created(),
    _updated(),
    UniqueConstraint("userId", "targetDate", name="DailyPlan_userId_targetDate_key"),
    Index("DailyPlan_reviewId_idx", "reviewId"),
)

uom_suggestion = Table(
    "UomSuggestion", metadata,
    _id(),
    _user_id(),
    Column("dailyPlanId", Text, ForeignKey("DailyPlan.id", ondelete="CASCADE"), nullable=False),
    Column("needed", Boolean, nullable=False),
    Column("status", Text, nullable=False),
    Column("patternId", Text, ForeignKey("Pattern.id", ondelete="SET NULL")),
    Column("patternKey", Text),
    Column("statement", Text),
    Column("reason", Text, nullable=False),
    _created(),
    _updated(),
    UniqueConstraint("dailyPlanId", name="UomSuggestion_dailyPlanId_key"),
    CheckConstraint("status IN ('PROPOSED', 'NONE_NEEDED', 'ACCEPTED', 'DISMISSED')",
                    name="UomSuggestion_status_check"),
    Index("UomSuggestion_userId_status_idx", "userId", "status"),
    Index("UomSuggestion_patternId_idx", "patternId"),
)

uom_entry = Table(
    "UomEntry", metadata,
    _id(),
    _user_id(),
    Column("patternKey", Text, nullable=False),
    Column("statement", Text, nullable=False),
    Column("suggestionId", Text, ForeignKey("UomSuggestion.id", ondelete="SET NULL")),
    _created(),
    UniqueConstraint("userId", "patternKey", name="UomEntry_userId_patternKey_key"),
    Index("UomEntry_suggestionId_idx", "suggestionId"),
)
