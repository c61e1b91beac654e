"""The six built-in job types and the payload each one takes.

One table says which fields a payload of each built-in type must carry; the
typed enqueue helpers check it before writing, and the pool checks it again
before running (a row may come from elsewhere, such as the original TypeScript service).
An error names the type and the missing or wrong field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skiplock.queue_core.errors import InvalidPayload

INTERPRET_EVENT = "INTERPRET_EVENT"
DETECT_PATTERNS = "DETECT_PATTERNS"
GENERATE_INSIGHTS = "GENERATE_INSIGHTS"
GENERATE_REVIEW = "GENERATE_REVIEW"
GENERATE_TOMORROW_PLAN = "GENERATE_TOMORROW_PLAN"
SUGGEST_UOM_UPDATE = "SUGGEST_UOM_UPDATE"

BUILTIN_TYPES = (
    INTERPRET_EVENT,
    DETECT_PATTERNS,
    GENERATE_INSIGHTS,
    GENERATE_REVIEW,
    GENERATE_TOMORROW_PLAN,
    SUGGEST_UOM_UPDATE,
)

TRIGGER_TYPES = ("new_event", "pattern_created", "pattern_evolved")
REVIEW_TYPES = ("DAILY", "WEEKLY", "MONTHLY")


@dataclass(frozen=True)
class Field:
    name: str
    required: bool = True
    choices: tuple[str, ...] | None = None


SCHEMAS: dict[str, tuple[Field, ...]] = {
    INTERPRET_EVENT: (Field("eventId"),),
    DETECT_PATTERNS: (Field("userId"), Field("triggerEventId"), Field("interpretationId")),
    GENERATE_INSIGHTS: (
        Field("userId"),
        Field("triggerType", choices=TRIGGER_TYPES),
        Field("eventId", required=False),
        Field("interpretationId", required=False),
        Field("patternId", required=False),
    ),
    GENERATE_REVIEW: (
        Field("userId"),
        Field("type", choices=REVIEW_TYPES),
        Field("periodKey"),
        Field("timezone"),
    ),
    GENERATE_TOMORROW_PLAN: (Field("userId"), Field("reviewId"), Field("targetDate")),
    SUGGEST_UOM_UPDATE: (Field("userId"), Field("dailyPlanId")),
}


def validate_payload(job_type: str, payload: Any) -> dict[str, Any]:
    """Check `payload` against its built-in type; other types only need a JSON object."""
    if not isinstance(payload, dict):
        raise InvalidPayload(
            f"payload of {job_type} must be a JSON object, not {_json_kind(payload)}"
        )
    for spec in SCHEMAS.get(job_type, ()):
        value = payload.get(spec.name)
        if value is None:
            if spec.required:
                raise InvalidPayload(f"payload of {job_type} is missing field {spec.name!r}")
            continue
        if not isinstance(value, str) or not value.strip():
            raise InvalidPayload(
                f"field {spec.name!r} of {job_type} must be a non-empty string, "
                f"not {_json_kind(value)}"
            )
        if spec.choices and value not in spec.choices:
            raise InvalidPayload(
                f"field {spec.name!r} of {job_type} must be one of "
                f"{', '.join(spec.choices)}, not {value!r}"
            )
    for name, check in _VALUE_CHECKS.get(job_type, ()):
        try:
            check(payload)
        except ValueError as exc:
            raise InvalidPayload(f"field {name!r} of {job_type} is wrong: {exc}") from None
    return payload


# -- what a string field's value must mean ------------------------------------------------

# Per type, (field, check): a check raises ValueError when the value is wrong. The
# calendar a review's fields must fit is the domain's (handlers/domain/periods.py),
# which adds its checks here when the handlers load (importing `skiplock` does).
_VALUE_CHECKS: dict[str, list[tuple[str, Callable[[dict[str, Any]], object]]]] = {}


def check_value(job_type: str, field: str, check: Callable[[dict[str, Any]], object]) -> None:
    """Have `validate_payload` run `check(payload)` for `job_type`, naming `field` in
    the error when it raises ValueError."""
    checks = _VALUE_CHECKS.setdefault(job_type, [])
    if (field, check) not in checks:
        checks.append((field, check))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
