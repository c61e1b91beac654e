"""Schedules: the file, one job per occurrence across masters, bounded catch-up, the commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skiplock.ops import schedules
from skiplock.pool.observer import PoolSnapshot
from skiplock.pool.scheduler import ScheduleObserver
from skiplock.queue_core.errors import ConfigurationError
from tests.ops.helpers import run
from tests.queue_core.helpers import count, sql

FILE = """
[[schedule]]
name = "every-minute"
cron = "* * * * *"
type = "PING"
payload = { hello = "world" }
catch_up = "10m"

[[schedule]]
name = "daily-reviews"
cron = "15 * * * *"
type = "BACKFILL_REVIEWS"
payload = { period = "daily" }
"""


def write(tmp_path: Path, text: str = FILE, name: str = "schedule.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_new_schedule_starts_now_and_fires_each_occurrence_once(tmp_path):
    every = schedules.load_file(write(tmp_path))[0]
    start = utc(2026, 11, 28, 10, 0, 30)
    assert schedules.run_due([every], now=start).created == 0  # first sight: nothing old
    later = start + timedelta(minutes=3)
    assert schedules.run_due([every], now=later).created == 3
    # A second master at the same time adds nothing.
    assert schedules.run_due([every], now=later).created == 0
    keys = sorted(r[0] for r in sql('SELECT "idempotencyKey" FROM "WorkerJob"'))
    assert keys == [f"schedule:every-minute:2026-11-28T10:0{m}Z" for m in (1, 2, 3)]
    assert sql("""SELECT DISTINCT payload FROM "WorkerJob" """)[0][0] == {"hello": "world"}


def test_catch_up_after_an_outage_is_bounded(tmp_path):
    every = schedules.load_file(write(tmp_path))[0]
    start = utc(2026, 11, 28, 10, 0, 30)
    schedules.run_due([every], now=start)
    # No master ran for two hours: only the last 10 minutes (catch_up) are enqueued.
    result = schedules.run_due([every], now=start + timedelta(hours=2))
    assert result.created == 10
    assert count() == 10


def test_two_masters_with_different_cursors_never_double(tmp_path):
    every = schedules.load_file(write(tmp_path))[0]
    start = utc(2026, 11, 28, 10, 0, 30)
    schedules.run_due([every], now=start)
    schedules.run_due([every], now=start + timedelta(minutes=5))
    # A master whose clock read an earlier time advances nothing backwards and adds nothing.
    assert schedules.run_due([every], now=start + timedelta(minutes=4)).created == 0
    assert count() == 5
    [(last,)] = sql("""SELECT "lastOccurrence" FROM "WorkerSchedule" WHERE name = 'every-minute'""")
    assert last == utc(2026, 11, 28, 10, 5)


def test_a_reviews_schedule_enqueues_a_backfill_job_that_a_child_runs(tmp_path):
    reviews = schedules.load_file(write(tmp_path))[1]
    sql("""INSERT INTO "User" (id, name, timezone) VALUES ('u1', 'u1', 'UTC')""")
    start = utc(2026, 11, 28, 10, 0)
    schedules.run_due([reviews], now=start)
    schedules.run_due([reviews], now=start + timedelta(minutes=20))
    [(job_type, payload)] = sql('SELECT type, payload FROM "WorkerJob"')
    assert job_type == "BACKFILL_REVIEWS" and payload == {"period": "daily"}
    from skiplock.handlers import get_handler

    handler = get_handler("BACKFILL_REVIEWS")  # built in: every pool runs it
    assert handler is not None
    result = handler(payload, "job")
    assert result.success and result.data["created"] >= 1
    # The job computes its own range from the database clock: yesterday's review is in it.
    [yesterday] = sql("SELECT (now() - interval '1 day')::date::text")[0]
    key = f"review:u1:DAILY:{yesterday}"
    assert count(f"""type = 'GENERATE_REVIEW' AND "idempotencyKey" = '{key}'""") == 1
    again = handler(payload, "job")
    assert again.data["created"] == 0


def test_the_observer_runs_due_schedules_on_its_ticks(tmp_path):
    every = schedules.Schedule(name="obs", cron="* * * * *", job_type="PING", catch_up_s=600)
    sql("""INSERT INTO "WorkerSchedule" (name, "lastOccurrence")
           VALUES ('obs', now() - interval '3 minutes')""")
    observer = ScheduleObserver([every], check_interval_s=3600)
    snapshot = PoolSnapshot("m", "host", 1, 0.0, 1, "running", ())
    observer.on_start(snapshot)  # catches up at once
    assert count() == 3
    sql("""UPDATE "WorkerSchedule" SET "lastOccurrence" = now() - interval '2 minutes'""")
    sql("""DELETE FROM "WorkerJob" """)
    observer.on_tick(snapshot)  # not yet time to look again
    assert count() == 0
    observer._next_check = 0
    observer.on_tick(snapshot)
    assert count() == 2


@pytest.mark.parametrize(("text", "message"), [
    ('[[schedule]]\nname = "x"\ncron = "* * *"\ntype = "T"\n', "must have 5 fields"),
    ('[[schedule]]\nname = "x"\ncron = "* * * * *"\n', "needs a job type"),
    ('[[schedule]]\nname = "x"\ncron = "* * * * *"\ntype = "T"\ntimezone = "Mars/Olympus"\n',
     "unknown time zone"),
    ('[[schedule]]\nname = "x"\ncron = "* * * * *"\ntype = "T"\ncolour = "red"\n', "unknown keys"),
    ('[[schedule]]\nname = "x"\ncron = "* * * * *"\ntype = "T"\n' * 2, "duplicate names"),
    ("[[schedule]\n", "does not parse"),
])
def test_bad_schedule_files_say_what_is_wrong(tmp_path, text, message):
    with pytest.raises(ConfigurationError, match=message):
        schedules.load_file(write(tmp_path, text))


def test_json_files_and_schedules_in_code(tmp_path):
    path = write(tmp_path, json.dumps({"schedule": [
        {"name": "j", "cron": "@hourly", "type": "T", "timezone": "Asia/Tokyo"}]}), "s.json")
    schedules.add(schedules.Schedule(name="in-code", cron="@daily", job_type="T"))
    try:
        assert [s.name for s in schedules.load(path)] == ["j", "in-code"]
    finally:
        schedules._in_code.clear()


def test_schedule_list_shows_next_occurrences_and_run_enqueues_due(tmp_path):
    path = str(write(tmp_path))
    listed = run("schedule", "list", "--file", path, "--count", "2")
    assert listed.exit_code == 0, listed.output
    assert "every-minute: * * * * * (UTC) -> PING" in listed.output
    assert listed.output.count("  next: ") == 4
    data = json.loads(run("schedule", "list", "--file", path, "--json").output)
    assert data[1]["type"] == "BACKFILL_REVIEWS" and len(data[0]["next"]) == 3
    assert run("schedule", "run", "--file", path).stdout.strip() == "enqueued 0 jobs"
    sql("""UPDATE "WorkerSchedule" SET "lastOccurrence" = now() - interval '2 minutes'
           WHERE name = 'every-minute'""")
    assert run("schedule", "run", "--file", path).stdout.strip() == "enqueued 2 jobs"
    env_listed = run("schedule", "list", "--offline", env={"SKIPLOCK_SCHEDULE_FILE": path})
    assert env_listed.exit_code == 0 and "daily-reviews" in env_listed.output


def test_schedule_commands_without_a_file_or_with_a_bad_one(tmp_path):
    assert run("schedule", "list").exit_code == 2
    bad = run("schedule", "list", "--file", str(tmp_path / "missing.toml"))
    assert bad.exit_code == 1 and "cannot read schedule file" in bad.output


def test_backfill_reviews_is_a_built_in_type_with_a_clear_error_for_bad_dates():
    from skiplock.handlers import get_handler

    enqueued = run("enqueue", "BACKFILL_REVIEWS",
                   '{"period": "daily", "from": "2026-11-01", "to": "2026-11-02"}')
    assert enqueued.exit_code == 0, enqueued.output
    result = get_handler("BACKFILL_REVIEWS")({"period": "daily", "from": "nope", "to": "x"}, "j")
    assert not result.success and not result.should_retry
    assert "BACKFILL_REVIEWS" in result.error


@pytest.mark.parametrize(("entry", "reason"), [
    ('type = "GENERATE_REVIEW"\npayload = { userId = "u1" }', "missing field 'type'"),
    ('type = "PING"\nmax_attempts = 0', "max_attempts must be between 1 and 1000"),
    ('type = "PING"\npriority = "high"', "priority must be an integer"),
])
def test_each_entry_is_checked_at_start_as_an_enqueue_would_check_it(tmp_path, entry, reason):
    path = write(tmp_path, f'[[schedule]]\nname = "bad"\ncron = "@daily"\n{entry}\n')
    with pytest.raises(ConfigurationError, match=reason) as caught:
        schedules.load_file(path)
    assert "schedule 'bad'" in str(caught.value)


def test_an_entry_that_fails_at_run_time_is_logged_by_name_each_time_and_stops_no_other(
    tmp_path, caplog
):
    # A database rule refuses the first schedule's jobs; start validation cannot know.
    sql("""CREATE FUNCTION test_refuse_broken() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.type = 'BROKEN' THEN RAISE EXCEPTION 'BROKEN jobs are refused'; END IF;
                 RETURN NEW; END $$""")
    sql("""CREATE TRIGGER test_refuse_broken BEFORE INSERT ON "WorkerJob"
           FOR EACH ROW EXECUTE FUNCTION test_refuse_broken()""")
    try:
        broken = schedules.Schedule(name="a-broken", cron="* * * * *", job_type="BROKEN")
        fine = schedules.Schedule(name="b-fine", cron="* * * * *", job_type="PING")
        start = utc(2026, 11, 28, 10, 0, 30)
        schedules.run_due([broken, fine], now=start)
        for minutes in (2, 4):
            caplog.clear()
            result = schedules.run_due([broken, fine], now=start + timedelta(minutes=minutes))
            assert "BROKEN jobs are refused" in result.failed["a-broken"]
            assert "b-fine" in result.enqueued and "b-fine" not in result.failed
            assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
                "schedule a-broken: could not enqueue its due occurrences: "
                + result.failed["a-broken"]]
        assert count("type = 'PING'") == 4 and count("type = 'BROKEN'") == 0
    finally:
        sql('DROP TRIGGER IF EXISTS test_refuse_broken ON "WorkerJob"')
        sql("DROP FUNCTION IF EXISTS test_refuse_broken()")


def test_schedule_run_exits_1_when_a_schedule_failed_and_still_runs_the_others(tmp_path):
    sql("""CREATE FUNCTION test_refuse_broken() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.type = 'BROKEN' THEN RAISE EXCEPTION 'BROKEN jobs are refused'; END IF;
                 RETURN NEW; END $$""")
    sql("""CREATE TRIGGER test_refuse_broken BEFORE INSERT ON "WorkerJob"
           FOR EACH ROW EXECUTE FUNCTION test_refuse_broken()""")
    try:
        path = str(write(tmp_path, '[[schedule]]\nname = "a-broken"\ncron = "* * * * *"\n'
                                   'type = "BROKEN"\n\n'
                                   '[[schedule]]\nname = "b-fine"\ncron = "* * * * *"\n'
                                   'type = "PING"\n'))
        assert run("schedule", "run", "--file", path).exit_code == 0  # first sight: nothing due
        sql("""UPDATE "WorkerSchedule" SET "lastOccurrence" = now() - interval '2 minutes'""")
        result = run("schedule", "run", "--file", path)
        assert result.exit_code == 1, result.output
        assert result.stdout.strip() == "enqueued 2 jobs"  # the fine one ran all the same
        assert "skiplock: error: 1 of 2 schedules failed: a-broken" in result.stderr
        assert "BROKEN jobs are refused" in result.stderr
        assert count("type = 'PING'") == 2
    finally:
        sql('DROP TRIGGER IF EXISTS test_refuse_broken ON "WorkerJob"')
        sql("DROP FUNCTION IF EXISTS test_refuse_broken()")
