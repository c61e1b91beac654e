"""The value types the domain steps pass to each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

TIMES_OF_DAY = ("morning", "afternoon", "evening", "night")
WEEKDAY = "weekday"
WEEKEND = "weekend"


@dataclass(frozen=True)
class Reading:
    """What INTERPRET_EVENT extracts from one journal entry."""

    mood_score: float  # -1 (very low) .. 1 (very high)
    mood: str  # "negative", "neutral", "positive"
    energy: str  # "low", "medium", "high"
    tags: tuple[str, ...]
    people: tuple[str, ...]
    time_of_day: str
    local_date: date

    @property
    def day_kind(self) -> str:
        return WEEKEND if self.local_date.isoweekday() >= 6 else WEEKDAY


@dataclass(frozen=True)
class Observation:
    """A reading tied to its event, as the later steps read it back."""

    event_id: str
    reading: Reading
    text: str = ""
    interpretation_id: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class PatternRule:
    """A recurring association: in `context`, `tag` goes with `outcome`."""

    key: str
    tag: str
    context: tuple[str, ...]  # e.g. ("weekday", "evening"); empty: any time
    outcome: str  # "mood:negative", "mood:positive", "energy:low", "energy:high"
    support: int  # observations with tag, context and outcome
    occurrences: int  # observations with tag and context
    confidence: float  # support / occurrences
    lift: float  # confidence / base rate of the outcome
    description: str
    evidence: tuple[str, ...] = field(default=())  # supporting event ids, oldest first
    id: str | None = None  # set once stored
    status: str = "ACTIVE"
