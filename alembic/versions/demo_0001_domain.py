"""The stand-in domain of the built-in handlers: users, journal events and what the six job types make.

Revision ID: demo_0001_domain
Revises: (none: the base of the branch `demo`)

The six job types of the original TypeScript service (docs/README.md, "The
seed") read and write a domain: a user's journal
events, their interpretations, patterns, insights, reviews, plans and
suggestions for the user's operating manual. skiplock's built-in handlers
work on these tables, in that service's Prisma style. They are the demo's and the
checkout's, not the queue's: `skiplock migrate` never creates them, and an
application's database keeps its own "User". Installed by `skiplock migrate
--demo`, `skiplock demo`, and `make worker` / `make demo` in a checkout; a
pool serves the built-in handlers only where they are installed.

A database that already has a table of one of these names (an application's
own "User", say) is refused with one line before anything changes: the demo
belongs in a database of its own. "WorkerJob"."userId" gets no foreign key to
this "User": it is a plain column unless the application adds one (README).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

revision = "demo_0001_domain"
down_revision = None
branch_labels = ("demo",)
depends_on = None

TABLES = ("UomEntry", "UomSuggestion", "DailyPlan", "Review", "Insight", "Pattern",
          "Interpretation", "Event", "User")


def _id() -> sa.Column:
    return sa.Column("id", sa.Text, primary_key=True,
                     server_default=sa.text("gen_random_uuid()::text"))


def _user_id() -> sa.Column:
    return sa.Column("userId", sa.Text, sa.ForeignKey("User.id", ondelete="CASCADE",
                                                      onupdate="CASCADE"), nullable=False)


def _stamp(name: str) -> sa.Column:
    return sa.Column(name, TIMESTAMP(timezone=True), nullable=False, server_default=sa.func.now())


# Refuse, before anything changes, a database where one of the names is taken.
_REFUSE_TAKEN_NAMES = """
DO $$
DECLARE
    taken text;
BEGIN
    SELECT string_agg(format('%I', name), ', ' ORDER BY n) INTO taken
    FROM unnest(ARRAY[{names}]) WITH ORDINALITY AS t(name, n)
    WHERE to_regclass(format('%I', name)) IS NOT NULL;
    IF taken IS NOT NULL THEN
        RAISE EXCEPTION 'the demo domain of the built-in handlers cannot be installed here: this '
            'database already has %; install the demo in a database of its own (`skiplock '
            'migrate` without --demo installs the queue alone and touches no other table)', taken;
    END IF;
END $$
"""


def upgrade() -> None:
    created = reversed(TABLES)  # TABLES is in the order of dropping them
    op.execute(_REFUSE_TAKEN_NAMES.format(names=", ".join(f"'{t}'" for t in created)))
    op.create_table(
        "User",
        _id(),
        sa.Column("name", sa.Text),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        _stamp("createdAt"),
    )
    op.create_table(
        "Event",
        _id(),
        _user_id(),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("occurredAt", TIMESTAMP(timezone=True), nullable=False),
        _stamp("createdAt"),
    )
    op.create_index("Event_userId_occurredAt_idx", "Event", ["userId", "occurredAt"])
    op.create_table(
        "Interpretation",
        _id(),
        sa.Column("eventId", sa.Text, sa.ForeignKey("Event.id", ondelete="CASCADE"),
                  nullable=False),
        _user_id(),
        sa.Column("moodScore", sa.Float, nullable=False),
        sa.Column("mood", sa.Text, nullable=False),
        sa.Column("energy", sa.Text, nullable=False),
        sa.Column("tags", JSONB, nullable=False),
        sa.Column("people", JSONB, nullable=False),
        sa.Column("timeOfDay", sa.Text, nullable=False),
        sa.Column("localDate", sa.Date, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        _stamp("createdAt"),
        _stamp("updatedAt"),
        sa.UniqueConstraint("eventId", name="Interpretation_eventId_key"),
    )
    op.create_index("Interpretation_userId_localDate_idx", "Interpretation",
                    ["userId", "localDate"])
    op.create_table(
        "Pattern",
        _id(),
        _user_id(),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("tag", sa.Text, nullable=False),
        sa.Column("context", JSONB, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("support", sa.Integer, nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("lift", sa.Float, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("evidence", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="ACTIVE"),
        _stamp("createdAt"),
        _stamp("updatedAt"),
        sa.UniqueConstraint("userId", "key", name="Pattern_userId_key_key"),
        sa.CheckConstraint("status IN ('ACTIVE', 'FADED')", name="Pattern_status_check"),
    )
    op.create_table(
        "Insight",
        _id(),
        _user_id(),
        sa.Column("questionKey", sa.Text, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("answerKey", sa.Text, nullable=False),
        sa.Column("evidenceCount", sa.Integer, nullable=False),
        sa.Column("patternId", sa.Text, sa.ForeignKey("Pattern.id", ondelete="SET NULL")),
        sa.Column("triggerType", sa.Text, nullable=False),
        sa.Column("eventId", sa.Text, sa.ForeignKey("Event.id", ondelete="SET NULL")),
        _stamp("createdAt"),
        sa.UniqueConstraint("userId", "questionKey", "answerKey",
                            name="Insight_userId_questionKey_answerKey_key"),
    )
    op.create_table(
        "Review",
        _id(),
        _user_id(),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("periodKey", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("periodStart", TIMESTAMP(timezone=True), nullable=False),
        sa.Column("periodEnd", TIMESTAMP(timezone=True), nullable=False),
        sa.Column("summary", JSONB, nullable=False),
        _stamp("createdAt"),
        _stamp("updatedAt"),
        sa.UniqueConstraint("userId", "type", "periodKey",
                            name="Review_userId_type_periodKey_key"),
        sa.CheckConstraint("type IN ('DAILY', 'WEEKLY', 'MONTHLY')", name="Review_type_check"),
    )
    op.create_table(
        "DailyPlan",
        _id(),
        _user_id(),
        sa.Column("reviewId", sa.Text, sa.ForeignKey("Review.id", ondelete="SET NULL")),
        sa.Column("targetDate", sa.Date, nullable=False),
        sa.Column("focus", sa.Text, nullable=False),
        sa.Column("items", JSONB, nullable=False),
        _stamp("createdAt"),
        _stamp("updatedAt"),
        sa.UniqueConstraint("userId", "targetDate", name="DailyPlan_userId_targetDate_key"),
    )
    op.create_table(
        "UomSuggestion",
        _id(),
        _user_id(),
        sa.Column("dailyPlanId", sa.Text, sa.ForeignKey("DailyPlan.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("needed", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("patternId", sa.Text, sa.ForeignKey("Pattern.id", ondelete="SET NULL")),
        sa.Column("patternKey", sa.Text),
        sa.Column("statement", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        _stamp("createdAt"),
        _stamp("updatedAt"),
        sa.UniqueConstraint("dailyPlanId", name="UomSuggestion_dailyPlanId_key"),
        sa.CheckConstraint("status IN ('PROPOSED', 'NONE_NEEDED', 'ACCEPTED', 'DISMISSED')",
                           name="UomSuggestion_status_check"),
    )
    op.create_index("UomSuggestion_userId_status_idx", "UomSuggestion", ["userId", "status"])
    op.create_table(
        "UomEntry",
        _id(),
        _user_id(),
        sa.Column("patternKey", sa.Text, nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("suggestionId", sa.Text,
                  sa.ForeignKey("UomSuggestion.id", ondelete="SET NULL")),
        _stamp("createdAt"),
        sa.UniqueConstraint("userId", "patternKey", name="UomEntry_userId_patternKey_key"),
    )
    # Foreign keys that a delete elsewhere follows (SET NULL) need an index, or each delete of
    # an event, pattern or review scans the whole referencing table.
    for table, column in (("Insight", "eventId"), ("Insight", "patternId"),
                          ("DailyPlan", "reviewId"), ("UomSuggestion", "patternId"),
                          ("UomEntry", "suggestionId")):
        op.create_index(f"{table}_{column}_idx", table, [column])


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
