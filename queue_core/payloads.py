"""The six built-in job types and the payload each one takes.

One table says which fields a payload of each built-in type must carry; the
typed enqueue helpers check it before writing, and the pool checks it again
before running (a row may come from elsewhere, such as the original TypeScript service).
An error names the type and the missing or wrong field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


# -- values that a string field must hold --------------------------------------------------

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_PERIOD_FORMATS = {"DAILY": (_DATE, "YYYY-MM-DD"), "WEEKLY": (_WEEK, "YYYY-Www (ISO week)"),
                   "MONTHLY": (_MONTH, "YYYY-MM")}


def parse_date(text: str) -> date:
    """A real `YYYY-MM-DD` calendar date; ValueError otherwise."""
    if not isinstance(text, str) or not _DATE.match(text):
        raise ValueError(f"{text!r} is not a date of the form YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a real calendar date") from None


def period_days(review_type: str, key: str) -> tuple[date, date]:
    """First and last day of the period `key` names: `YYYY-MM-DD`, ISO `YYYY-Www`, `YYYY-MM`."""
    if review_type not in _PERIOD_FORMATS:
        raise ValueError(f"unknown review type {review_type!r}")
    pattern, form = _PERIOD_FORMATS[review_type]
    match = pattern.match(key) if isinstance(key, str) else None
    if not match:
        raise ValueError(f"period key {key!r} of a {review_type} review must look like {form}")
    numbers = [int(part) for part in match.groups()]
    try:
        if review_type == "DAILY":
            day = date(*numbers)
            return day, day
        if review_type == "WEEKLY":
            monday = date.fromisocalendar(numbers[0], numbers[1], 1)  # week 53 only if it exists
            return monday, monday + timedelta(days=6)
        year, month = numbers
        following = date(year + month // 12, month % 12 + 1, 1)
        return date(year, month, 1), following - timedelta(days=1)
    except ValueError as exc:
        raise ValueError(
            f"period key {key!r} is not a real {review_type.lower()} period ({exc})"
        ) from None


def load_timezone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (the `tzdata` package backs the system database)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("time zone must be an IANA name such as Europe/Paris")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory, a long name
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name)") from None


_VALUE_CHECKS: dict[str, tuple[tuple[str, Callable[[dict[str, Any]], object]], ...]] = {
    GENERATE_REVIEW: (
        ("periodKey", lambda p: period_days(p["type"], p["periodKey"])),
        ("timezone", lambda p: load_timezone(p["timezone"])),
    ),
    GENERATE_TOMORROW_PLAN: (("targetDate", lambda p: parse_date(p["targetDate"])),),
}


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
