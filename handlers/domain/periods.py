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

_PATTERNS = {
    DAILY: re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"),
    WEEKLY: re.compile(r"^(\d{4})-W(\d{2})$"),
    MONTHLY: re.compile(r"^(\d{4})-(\d{2})$"),
}
_FORMATS = {DAILY: "YYYY-MM-DD", WEEKLY: "YYYY-Www (ISO week)", MONTHLY: "YYYY-MM"}


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
    """The period named by `key`; ValueError says what is wrong with it."""
    pattern = _PATTERNS.get(period_type)
    if pattern is None:
        raise ValueError(f"unknown review type {period_type!r}")
    match = pattern.match(key) if isinstance(key, str) else None
    if not match:
        raise ValueError(
            f"period key {key!r} of a {period_type} review must look like {_FORMATS[period_type]}"
        )
    numbers = [int(part) for part in match.groups()]
    try:
        if period_type == DAILY:
            day = date(*numbers)
            return Period(period_type, key, day, day)
        if period_type == WEEKLY:
            year, week = numbers
            monday = date.fromisocalendar(year, week, 1)
            return Period(period_type, key, monday, monday + timedelta(days=6))
        year, month = numbers
        first = date(year, month, 1)
        following = date(year + month // 12, month % 12 + 1, 1)
        return Period(period_type, key, first, following - timedelta(days=1))
    except ValueError as exc:
        raise ValueError(
            f"period key {key!r} is not a real {period_type.lower()} period: {exc}"
        ) from None


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


def parse_date(text: str) -> date:
    """A `YYYY-MM-DD` calendar date; ValueError otherwise."""
    if not isinstance(text, str) or not _PATTERNS[DAILY].match(text):
        raise ValueError(f"{text!r} is not a date of the form YYYY-MM-DD")
    return date.fromisoformat(text)


def next_day(day: date) -> date:
    """The next calendar day.

    Calendar arithmetic on the local date, never on an instant: adding 24 hours
    to a UTC midnight (what the seed did) lands on the wrong day near midnight
    and across daylight-saving changes.
    """
    return day + timedelta(days=1)


def load_timezone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError when the database does not know it."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("time zone must be a non-empty IANA name such as Europe/Paris")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name)") from exc


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which `day` starts in `tz`."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def to_local(instant: datetime, tz: ZoneInfo) -> datetime:
    if instant.tzinfo is None:
        # The database hands timestamptz back aware; a naive value here was written as UTC.
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(tz)
