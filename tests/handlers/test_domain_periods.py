"""Period keys, local bounds and the next calendar day (pure, no database)."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from skiplock.handlers.domain.periods import (
    load_timezone,
    next_day,
    parse_date,
    parse_period,
    period_key,
)

PARIS = ZoneInfo("Europe/Paris")


def test_daily_period_is_one_local_day():
    period = parse_period("DAILY", "2026-03-10")
    start, end = period.bounds(PARIS)
    assert start == datetime(2026, 3, 9, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 10, 23, 0, tzinfo=UTC)


def test_daylight_saving_days_last_23_and_25_hours():
    spring = parse_period("DAILY", "2026-03-29").bounds(PARIS)
    autumn = parse_period("DAILY", "2026-10-25").bounds(PARIS)
    assert (spring[1] - spring[0]).total_seconds() == 23 * 3600
    assert (autumn[1] - autumn[0]).total_seconds() == 25 * 3600


def test_iso_week_53_exists_only_in_long_years():
    period = parse_period("WEEKLY", "2026-W53")
    assert period.first_day == date(2026, 12, 28)
    assert period.last_day == date(2027, 1, 3)
    assert period_key("WEEKLY", date(2027, 1, 1)) == "2026-W53"
    assert period_key("WEEKLY", date(2021, 1, 3)) == "2020-W53"
    with pytest.raises(ValueError, match="not a real weekly period"):
        parse_period("WEEKLY", "2025-W53")


def test_week_key_uses_iso_year_at_year_start():
    assert period_key("WEEKLY", date(2024, 12, 30)) == "2025-W01"


def test_monthly_period_covers_the_month_including_december_and_february():
    assert parse_period("MONTHLY", "2026-12").last_day == date(2026, 12, 31)
    assert parse_period("MONTHLY", "2028-02").last_day == date(2028, 2, 29)
    assert len(parse_period("MONTHLY", "2026-02").days) == 28


@pytest.mark.parametrize(
    ("kind", "key"),
    [("DAILY", "2026-3-1"), ("DAILY", "2026-02-30"), ("WEEKLY", "2026-10"),
     ("WEEKLY", "2026-W00"), ("MONTHLY", "2026-13"), ("MONTHLY", "2026-03-01"),
     ("YEARLY", "2026")],
)
def test_bad_period_keys_are_rejected(kind, key):
    with pytest.raises(ValueError):
        parse_period(kind, key)


def test_next_day_is_calendar_arithmetic_across_dst_and_year_end():
    assert next_day(date(2026, 3, 28)) == date(2026, 3, 29)
    assert next_day(date(2026, 12, 31)) == date(2027, 1, 1)
    assert next_day(parse_date("2028-02-28")) == date(2028, 2, 29)


def test_parse_date_and_timezones():
    with pytest.raises(ValueError):
        parse_date("28/03/2026")
    assert load_timezone("America/New_York").key == "America/New_York"
    for bad in ("Mars/Olympus", "", "../etc/passwd", "America", "Europe/" + "x" * 300):
        with pytest.raises(ValueError):
            load_timezone(bad)


ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Pacific/Kiritimati",
         "America/Santiago", "Asia/Kolkata"]


@settings(max_examples=300, deadline=None)
@example(day=date(1994, 12, 31), kind="DAILY", zone="Pacific/Kiritimati")
@example(day=date(1994, 12, 31), kind="WEEKLY", zone="Pacific/Kiritimati")
@given(day=st.dates(min_value=date(1971, 1, 1), max_value=date(2099, 12, 31)),
       kind=st.sampled_from(["DAILY", "WEEKLY", "MONTHLY"]), zone=st.sampled_from(ZONES))
def test_every_day_lies_in_the_period_its_key_names(day, kind, zone):
    period = parse_period(kind, period_key(kind, day))
    assert period.first_day <= day <= period.last_day
    start, end = period.bounds(ZoneInfo(zone))
    hours = (end - start).total_seconds() / 3600
    # Local days last 23 to 25 hours (Lord Howe shifts by half an hour), and a zone that
    # crossed the date line skipped a whole day (Kiritimati lost 31 December 1994).
    assert 22.5 * len(period.days) - 24 <= hours <= 25.5 * len(period.days)
    assert next_day(period.last_day) == period.last_day + timedelta(days=1)
