"""backfill interpret / reviews: batches, keys, dry runs, interruption and rerun."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from skiplock.handlers import backfill as work
from tests.ops.helpers import one_error_line, run, skiplock
from tests.queue_core.helpers import count, sql


def users(*specs: tuple[str, str]) -> None:
    for user_id, zone in specs:
        sql('INSERT INTO "User" (id, name, timezone) VALUES (:id, :id, :tz)', id=user_id, tz=zone)


def events(user_id: str, n: int, *, day: str = "2026-11-01", prefix: str = "e") -> list[str]:
    ids = [f"{prefix}{user_id}_{i:04d}" for i in range(n)]
    sql("""INSERT INTO "Event" (id, "userId", text, "occurredAt")
           SELECT unnest(CAST(:ids AS text[])), :u, 'went running', CAST(:day AS timestamptz)""",
        ids=ids, u=user_id, day=day)
    return ids


def interpret(event_id: str, user_id: str) -> None:
    sql("""INSERT INTO "Interpretation" ("eventId", "userId", "moodScore", mood, energy, tags,
                                         people, "timeOfDay", "localDate", method)
           VALUES (:e, :u, 0, 'neutral', 'medium', '[]', '[]', 'morning', '2026-11-01', 'rules')""",
        e=event_id, u=user_id)


def test_interpret_enqueues_events_without_an_interpretation_once():
    users(("u1", "UTC"), ("u2", "UTC"))
    done = events("u1", 5)
    events("u2", 3)
    interpret(done[0], "u1")
    result = run("backfill", "interpret", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "enqueued 7 INTERPRET_EVENT jobs (0 of 7 already queued)" in result.stdout
    assert "backfill interpret: 7/7" in result.stderr  # plain progress lines off a terminal
    assert count("type = 'INTERPRET_EVENT'") == 7
    assert count("""type = 'INTERPRET_EVENT' AND "idempotencyKey" = 'interpret:' || (payload->>'eventId')
                    AND "userId" IS NOT NULL""") == 7
    again = json.loads(run("backfill", "interpret", "--json").stdout)
    assert again == {"candidates": 7, "created": 0, "alreadyQueued": 7, "skipped": 0,
                     "skippedReasons": [], "notOverYet": 0, "dryRun": False}
    assert count() == 7


def test_interpret_filters_by_user_and_time_and_dry_run_writes_nothing():
    users(("u1", "UTC"), ("u2", "UTC"))
    events("u1", 4, day="2026-10-01T12:00:00Z", prefix="old")
    events("u1", 2, day="2026-11-15T12:00:00Z", prefix="new")
    events("u2", 3, day="2026-11-15T12:00:00Z")
    dry = run("backfill", "interpret", "--user-id", "u1", "--since", "2026-11-01", "--dry-run")
    assert dry.stdout.strip() == "would enqueue 2 INTERPRET_EVENT jobs (0 of 2 already queued; dry run)"
    assert count() == 0
    run("backfill", "interpret", "--user-id", "u1", "--until", "2026-11-01")
    assert count() == 4
    dry = json.loads(run("backfill", "interpret", "--dry-run", "--json").stdout)
    assert (dry["candidates"], dry["alreadyQueued"]) == (9, 4)


def test_interpret_interrupted_then_rerun_adds_nothing_twice(monkeypatch):
    users(("u1", "UTC"))
    events("u1", 10)
    real = work.enqueue_batch
    calls = {"n": 0}

    def flaky(jobs, conn=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third batch
        return real(jobs, conn=conn)

    monkeypatch.setattr(work, "enqueue_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        work.backfill_interpret(batch_size=3)
    assert count() == 6
    monkeypatch.setattr(work, "enqueue_batch", real)
    outcome = work.backfill_interpret(batch_size=4)
    assert (outcome.created, outcome.already_queued) == (4, 6)
    assert count() == 10
    assert sql("""SELECT count(DISTINCT payload->>'eventId') FROM "WorkerJob" """)[0][0] == 10


def test_periods_use_iso_weeks_and_calendar_months():
    assert [p.key for p in work.periods("daily", date(2026, 2, 27), date(2026, 3, 1))] == [
        "2026-02-27", "2026-02-28", "2026-03-01"]
    assert [p.key for p in work.periods("weekly", date(2026, 12, 30), date(2027, 1, 5))] == [
        "2026-W53", "2027-W01"]
    assert [p.key for p in work.periods("monthly", date(2026, 11, 30), date(2027, 1, 1))] == [
        "2026-11", "2026-12", "2027-01"]


def test_reviews_per_user_in_their_time_zone_only_for_ended_periods():
    users(("ny", "America/New_York"), ("tokyo", "Asia/Tokyo"), ("lost", "Not/AZone"))
    # 2026-11-28 23:30 UTC: Tokyo's 28th ended (it is the 29th there), New York's has not.
    now = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
    outcome = work.backfill_reviews("daily", date(2026, 11, 27), date(2026, 11, 28), now=now,
                                    batch_size=2)
    keys = {r[0] for r in sql('SELECT "idempotencyKey" FROM "WorkerJob"')}
    assert keys == {"review:ny:DAILY:2026-11-27", "review:tokyo:DAILY:2026-11-27",
                    "review:tokyo:DAILY:2026-11-28"}
    assert outcome.created == 3 and outcome.not_over == 1  # New York's 28th
    assert len(outcome.skipped) == 1 and "Not/AZone" in outcome.skipped[0]
    [payload] = sql("""SELECT payload FROM "WorkerJob"
                       WHERE "idempotencyKey" = 'review:tokyo:DAILY:2026-11-28'""")
    assert payload[0] == {"userId": "tokyo", "type": "DAILY", "periodKey": "2026-11-28",
                          "timezone": "Asia/Tokyo"}


def test_reviews_command_weekly_and_monthly_and_rerun():
    users(("u1", "UTC"), ("u2", "America/New_York"))
    result = run("backfill", "reviews", "--period", "weekly", "--from", "2026-10-01",
                 "--to", "2026-10-31", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["created"] == 2 * 5  # ISO weeks 40..44
    assert json.loads(run("backfill", "reviews", "--period", "weekly", "--from", "2026-10-01",
                          "--to", "2026-10-31", "--json").stdout)["created"] == 0
    monthly = run("backfill", "reviews", "--period", "monthly", "--from", "2026-09-15",
                  "--to", "2026-10-01", "--user-id", "u2")
    assert "enqueued 2 GENERATE_REVIEW jobs" in monthly.stdout
    assert count("\"idempotencyKey\" = 'review:u2:MONTHLY:2026-09'") == 1


@pytest.mark.parametrize("args", [
    ["backfill", "reviews", "--period", "daily", "--from", "2026-13-01"],
    ["backfill", "reviews", "--period", "yearly", "--from", "2026-01-01"],
    ["backfill", "reviews", "--period", "daily"],
    ["backfill", "interpret", "--since", "yesterday"],
    ["backfill", "interpret", "--batch-size", "0"],
])
def test_usage_errors_exit_2_and_write_nothing(args):
    assert run(*args).exit_code == 2
    assert count() == 0


def test_bad_ranges_are_one_line_exit_1():
    one_error_line(run("backfill", "reviews", "--period", "daily", "--from", "2026-11-02",
                       "--to", "2026-11-01"), "is before --from")
    one_error_line(run("backfill", "interpret", "--since", "2026-11-02", "--until", "2026-11-01"),
                   "is not after --since")
    assert count() == 0


def test_backfill_through_a_real_subprocess():
    users(("u1", "UTC"))
    events("u1", 3)
    result = skiplock("backfill", "interpret", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "enqueued 3 INTERPRET_EVENT jobs (0 of 3 already queued)"
    assert count() == 3


def test_a_backfill_interrupted_by_ctrl_c_then_rerun_adds_each_job_once():
    import os
    import signal
    import subprocess
    import sys
    import time

    users(("u1", "UTC"))
    events("u1", 30000)
    process = subprocess.Popen(
        [sys.executable, "-m", "skiplock", "backfill", "interpret", "--batch-size", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while count() < 500:
            assert process.poll() is None, "the backfill ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0
    assert "Aborted" in stderr.decode()
    done = count()
    assert 500 <= done < 30000
    rerun = skiplock("backfill", "interpret", "--batch-size", "5000", "--json")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["created"] == 30000 - done and summary["alreadyQueued"] == done
    assert count() == 30000
    assert sql("""SELECT count(DISTINCT "idempotencyKey") FROM "WorkerJob" """)[0][0] == 30000
