"""Review periods and local calendar days.

A period is named by its key: `YYYY-MM-DD` (DAILY), ISO week `YYYY-Www`
(WEEKLY, weeks 01 to 52 or 53), `YYYY-MM` (MONTHLY). Its bounds are the local
midnights of its first day and of the day after its last, in the user's IANA
time zone, so a daylight-saving day lasts 23 or 25 hours and an event at 23:30
local time belongs to the day it happened on, whatever the UTC date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAILY = "DAILY"
WEEKLY = "WEEKLY"
MONTHLY = "MONTHLY"

__all__ = ["DAILY", "MONTHLY", "WEEKLY", "Period", "load_timezone", "local_midnight",
           "next_day", "parse_date", "parse_period", "period_key", "to_local"]

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


@dataclass(frozen=True)
class Period:
    type: str
    key: str
    first_day: date
    last_day: date  # inclusive

    @property
    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=i) for i in range(count)]

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) of the period as UTC instants."""
        return local_midnight(self.first_day, tz), local_midnight(
            self.last_day + timedelta(days=1), tz
        )


def parse_period(period_type: str, key: str) -> Period:
    """The period named by `key`; ValueError says what is wrong with it.

    A GENERATE_REVIEW payload's key is checked with the same rules
    (handlers/payloads.py).
    """
    first, last = period_days(period_type, key)
    return Period(period_type, key, first, last)


def period_key(period_type: str, day: date) -> str:
    """The key of the period of `period_type` that contains `day`."""
    if period_type == DAILY:
        return day.isoformat()
    if period_type == WEEKLY:
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if period_type == MONTHLY:
        return f"{day.year:04d}-{day.month:02d}"
    raise ValueError(f"unknown review type {period_type!r}")


def next_day(day: date) -> date:
    """The next calendar day.

    Calendar arithmetic on the local date, never on an instant: adding 24 hours
    to a UTC midnight (what the original service did) lands on the wrong day near midnight
    and across daylight-saving changes.
    """
    return day + timedelta(days=1)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which `day` starts in `tz`."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def to_local(instant: datetime, tz: ZoneInfo) -> datetime:
    if instant.tzinfo is None:
        # The database hands timestamptz back aware; a naive value here was written as UTC.
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(tz)
