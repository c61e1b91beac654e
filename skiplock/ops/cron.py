"""Cron expressions: the five classic fields, in a time zone, with DST handled.

    minute hour day-of-month month day-of-week
    */15 * * * *      every quarter hour
    0 3 * * mon-fri   03:00 on weekdays
    @daily, @hourly, @weekly, @monthly, @yearly

Lists (`1,15`), ranges (`1-5`), steps (`*/5`, `10-50/20`) and names (`jan`,
`mon`; 0 and 7 are Sunday) as in Vixie cron, including its rule that when
both day-of-month and day-of-week are restricted, a day matching either runs.

Occurrences are wall-clock times in the schedule's zone. A time that a DST
change skips (02:30 on the spring-forward night) does not occur that day; a
time it repeats (01:30 on the fall-back night) occurs once, at its first pass.
No dependency: what the scheduler needs fits in this page, and its tests
(tests/ops/test_cron.py) pin the DST and day-of-week rules it relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from skiplock.queue_core.errors import ConfigurationError

_ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, low, high, names)
_NO_NAMES: dict[str, int] = {}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, _NO_NAMES), ("hour", 0, 23, _NO_NAMES), ("day of month", 1, 31, _NO_NAMES),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
MAX_SEARCH_DAYS = 366 * 5  # "0 0 30 2 *" never occurs; stop looking after this


def _value(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    number = names.get(text.lower()) if names else None
    if number is None:
        if not text.isdigit():
            raise ValueError(f"{text!r} is not a number for the {what}")
        number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{what} {number} is outside {low}-{high}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"step {step_text!r} of the {what} must be a positive number")
            step = int(step_text)
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            start, stop = _value(a, low, high, names, what), _value(b, low, high, names, what)
            if stop < start:
                raise ValueError(f"range {body!r} of the {what} runs backwards")
        else:
            start = _value(body, low, high, names, what)
            stop = high if step_text else start
        values.update(range(start, stop + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = _ALIASES.get(expression.strip().lower(), expression.strip())
        parts = text.split()
        if len(parts) != 5:
            raise ConfigurationError(
                f"cron expression {expression!r} must have 5 fields "
                "(minute hour day-of-month month day-of-week) or be one of "
                + ", ".join(sorted(_ALIASES)))
        try:
            fields = [_field(p, lo, hi, names, what)
                      for p, (what, lo, hi, names) in zip(parts, _FIELDS, strict=True)]
        except ValueError as exc:
            raise ConfigurationError(f"cron expression {expression!r}: {exc}") from None
        weekdays = frozenset(d % 7 for d in fields[4])
        return cls(expression, fields[0], fields[1], fields[2], fields[3], weekdays,
                   parts[2] == "*", parts[4] == "*")

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week  # Vixie cron: either, when both are restricted

    def _local_times(self, start_day: date) -> Iterator[datetime]:
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        for offset in range(MAX_SEARCH_DAYS):
            day = start_day + timedelta(days=offset)
            if self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        yield datetime.combine(day, time(h, m))

    def occurrences(self, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        """Occurrences strictly after `after` (aware), as aware UTC datetimes, in order."""
        local_after = after.astimezone(zone)
        for naive in self._local_times(local_after.date() - timedelta(days=1)):
            aware = naive.replace(tzinfo=zone)
            if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
                continue  # skipped by a DST change
            instant = aware.astimezone(UTC)
            if instant > after:
                yield instant

    def next_after(self, after: datetime, zone: ZoneInfo) -> datetime | None:
        return next(self.occurrences(after, zone), None)

    def between(self, after: datetime, until: datetime, zone: ZoneInfo) -> list[datetime]:
        """Occurrences in (after, until]."""
        found = []
        for instant in self.occurrences(after, zone):
            if instant > until:
                break
            found.append(instant)
        return found
