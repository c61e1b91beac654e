"""The cron parser: fields, names, Vixie day rules, time zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from skiplock.ops.cron import Cron
from skiplock.queue_core.errors import ConfigurationError

PARIS = ZoneInfo("Europe/Paris")
UTC_ZONE = ZoneInfo("UTC")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def nexts(expr: str, after: datetime, n: int, zone: ZoneInfo = UTC_ZONE) -> list[datetime]:
    found = []
    for occurrence in Cron.parse(expr).occurrences(after, zone):
        found.append(occurrence)
        if len(found) == n:
            break
    return found


def test_steps_ranges_lists_and_names():
    assert nexts("*/20 * * * *", utc(2026, 1, 1, 10, 5), 3) == [
        utc(2026, 1, 1, 10, 20), utc(2026, 1, 1, 10, 40), utc(2026, 1, 1, 11, 0)]
    assert nexts("0 9 * * mon-fri", utc(2026, 11, 27, 12), 2) == [  # Friday noon
        utc(2026, 11, 30, 9), utc(2026, 12, 1, 9)]
    assert nexts("30 6 1,15 jan,jul *", utc(2026, 1, 2), 2) == [
        utc(2026, 1, 15, 6, 30), utc(2026, 7, 1, 6, 30)]
    assert nexts("@monthly", utc(2026, 1, 31, 23, 59), 1) == [utc(2026, 2, 1)]
    assert nexts("0 0 * * 7", utc(2026, 11, 28), 1) == [utc(2026, 11, 29)]  # 7 is Sunday


def test_strictly_after():
    assert nexts("0 * * * *", utc(2026, 1, 1, 10), 1) == [utc(2026, 1, 1, 11)]


def test_day_of_month_or_day_of_week_when_both_are_given():
    # Vixie cron: the 13th OR any Friday.
    assert nexts("0 0 13 * fri", utc(2026, 11, 1), 3) == [
        utc(2026, 11, 6), utc(2026, 11, 13), utc(2026, 11, 20)]


def test_a_date_that_never_comes_ends_the_search():
    assert Cron.parse("0 0 30 2 *").next_after(utc(2026, 1, 1), ZoneInfo("UTC")) is None


def test_wall_clock_in_a_zone_and_dst():
    # 03:00 Paris is 02:00 UTC in winter, 01:00 UTC in summer.
    assert nexts("0 3 * * *", utc(2026, 3, 27), 3, PARIS) == [
        utc(2026, 3, 27, 2), utc(2026, 3, 28, 2), utc(2026, 3, 29, 1)]
    # 02:30 does not exist on 2026-03-29 in Paris: that day has no occurrence.
    assert nexts("30 2 * * *", utc(2026, 3, 28, 12), 2, PARIS) == [
        utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    # 02:30 happens twice on 2026-10-25: it runs once, at the first pass.
    assert nexts("30 2 * * *", utc(2026, 10, 24, 12), 2, PARIS) == [
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


@pytest.mark.parametrize("expr", ["* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *",
                                  "5-1 * * * *", "* * * foo *", "a b c d e"])
def test_bad_expressions_are_refused_with_the_reason(expr):
    with pytest.raises(ConfigurationError, match="cron expression"):
        Cron.parse(expr)
