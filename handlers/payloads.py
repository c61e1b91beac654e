"""The payloads of the six built-in job types, as dataclasses.

The rules are the original service's: ids are non-empty strings, a choice is a
`Literal`, a review's period and time zone and a plan's date must be real ones
(handlers/domain/periods.py). Each model is its type's own contract
(queue_core/payloads.py): checked where a job is enqueued and again before it
runs, also when an application replaces a built-in handler without a model of
its own. The built-in handlers receive these instances.

The attributes keep the JSON names (`eventId`): a row written by the original
TypeScript service reads as it was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from skiplock.handlers.domain.periods import load_timezone, parse_date, period_days
from skiplock.queue_core import payloads
from skiplock.queue_core.payload_models import FieldError, NonEmpty, model_of
from skiplock.queue_core.payloads import (
    DETECT_PATTERNS,
    GENERATE_INSIGHTS,
    GENERATE_REVIEW,
    GENERATE_TOMORROW_PLAN,
    INTERPRET_EVENT,
    SUGGEST_UOM_UPDATE,
)

Text = Annotated[str, NonEmpty]
TriggerType = Literal["new_event", "pattern_created", "pattern_evolved"]
ReviewType = Literal["DAILY", "WEEKLY", "MONTHLY"]


@dataclass(frozen=True)
class InterpretEvent:
    eventId: Text


@dataclass(frozen=True)
class DetectPatterns:
    userId: Text
    triggerEventId: Text
    interpretationId: Text


@dataclass(frozen=True)
class GenerateInsights:
    userId: Text
    triggerType: TriggerType
    eventId: Text | None = None
    interpretationId: Text | None = None
    patternId: Text | None = None


@dataclass(frozen=True)
class GenerateReview:
    userId: Text
    type: ReviewType
    periodKey: Text
    timezone: Annotated[str, NonEmpty, load_timezone]

    def __post_init__(self) -> None:
        # The key's form depends on the review's type: a check of the two together.
        try:
            period_days(self.type, self.periodKey)
        except ValueError as exc:
            raise FieldError("periodKey", str(exc)) from None


@dataclass(frozen=True)
class GenerateTomorrowPlan:
    userId: Text
    reviewId: Text
    targetDate: Annotated[str, NonEmpty, parse_date]


@dataclass(frozen=True)
class SuggestUomUpdate:
    userId: Text
    dailyPlanId: Text


MODELS: dict[str, type] = {
    INTERPRET_EVENT: InterpretEvent,
    DETECT_PATTERNS: DetectPatterns,
    GENERATE_INSIGHTS: GenerateInsights,
    GENERATE_REVIEW: GenerateReview,
    GENERATE_TOMORROW_PLAN: GenerateTomorrowPlan,
    SUGGEST_UOM_UPDATE: SuggestUomUpdate,
}

for _type, _model in MODELS.items():
    payloads.set_payload_model(_type, model_of(_model), default=True)
