"""Each handler on real data in the real database (called directly, as a child would)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text

from skiplock import handlers
from skiplock.handlers.domain import store
from skiplock.handlers.domain.periods import load_timezone
from skiplock.handlers.domain.samples import sample_entries
from skiplock.queue_core import enqueue_generate_review
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.errors import InvalidJob
from tests.handlers.helpers import jobs_of, rows, run_handler, scalar

PARIS = "Europe/Paris"


def interpret_all(event_ids):
    for event_id in event_ids:
        assert run_handler("INTERPRET_EVENT", {"eventId": event_id}).success


# -- INTERPRET_EVENT -------------------------------------------------------------------------


def test_interpret_event_reads_local_time_and_chains_pattern_detection(make_user, add_events):
    user = make_user(PARIS)
    # 22:30 UTC on 10 March is 23:30 in Paris: still the 10th there, at night.
    [event] = add_events(user, [(datetime(2026, 3, 10, 22, 30, tzinfo=UTC),
                                 "Stressed at work, really tired")])
    result = run_handler("INTERPRET_EVENT", {"eventId": event})
    assert result.success, result.error
    [row] = rows('SELECT * FROM "Interpretation"')
    assert row.eventId == event and row.userId == user
    assert (row.localDate, row.timeOfDay, row.mood, row.energy) == (
        date(2026, 3, 10), "night", "negative", "low")
    assert row.tags == ["work"]
    [job] = jobs_of("DETECT_PATTERNS")
    assert job.payload == {"userId": user, "triggerEventId": event,
                           "interpretationId": row.id}
    assert job.idempotencyKey == f"patterns:{event}" and job.userId == user


def test_interpret_event_run_twice_leaves_one_row_and_one_next_job(make_user, add_events):
    user = make_user()
    [event] = add_events(user, [(datetime(2026, 3, 10, 8, tzinfo=UTC), "Great run")])
    first = run_handler("INTERPRET_EVENT", {"eventId": event})
    second = run_handler("INTERPRET_EVENT", {"eventId": event})
    assert first.data["interpretationId"] == second.data["interpretationId"]
    assert scalar('SELECT count(*) FROM "Interpretation"') == 1
    assert len(jobs_of("DETECT_PATTERNS")) == 1


def test_failure_between_write_and_enqueue_leaves_neither(make_user, add_events, monkeypatch):
    user = make_user()
    [event] = add_events(user, [(datetime(2026, 3, 10, 8, tzinfo=UTC), "Great run")])

    def boom(*args, **kwargs):
        raise RuntimeError("connection lost before the enqueue")

    monkeypatch.setattr(handlers.interpret_event, "enqueue_detect_patterns", boom)
    with pytest.raises(RuntimeError):  # raising is a retryable failure
        run_handler("INTERPRET_EVENT", {"eventId": event})
    assert scalar('SELECT count(*) FROM "Interpretation"') == 0
    assert jobs_of("DETECT_PATTERNS") == []

    monkeypatch.undo()
    assert run_handler("INTERPRET_EVENT", {"eventId": event}).success
    assert scalar('SELECT count(*) FROM "Interpretation"') == 1
    assert len(jobs_of("DETECT_PATTERNS")) == 1


# -- unknown records and bad payloads fail at once -------------------------------------------


@pytest.mark.parametrize(("job_type", "payload", "message"), [
    ("INTERPRET_EVENT", {"eventId": "nope"}, "event 'nope' does not exist"),
    ("DETECT_PATTERNS", {"userId": "nope", "triggerEventId": "e", "interpretationId": "i"},
     "user 'nope' does not exist"),
    ("GENERATE_INSIGHTS", {"userId": "nope", "triggerType": "new_event"},
     "user 'nope' does not exist"),
    ("GENERATE_REVIEW", {"userId": "nope", "type": "DAILY", "periodKey": "2026-03-10",
                         "timezone": PARIS}, "user 'nope' does not exist"),
    ("GENERATE_TOMORROW_PLAN", {"userId": "nope", "reviewId": "r", "targetDate": "2026-03-11"},
     "user 'nope' does not exist"),
    ("SUGGEST_UOM_UPDATE", {"userId": "nope", "dailyPlanId": "p"},
     "user 'nope' does not exist"),
    ("INTERPRET_EVENT", {"eventId": 3}, "field 'eventId' of INTERPRET_EVENT must be"),
    ("GENERATE_REVIEW", {"userId": "u", "type": "DAILY", "periodKey": "2026-W10",
                         "timezone": PARIS}, "field 'periodKey' of GENERATE_REVIEW"),
    ("GENERATE_REVIEW", {"userId": "u", "type": "DAILY", "periodKey": "2026-03-10",
                         "timezone": "Paris"}, "field 'timezone' of GENERATE_REVIEW"),
])
def test_unknown_records_and_bad_payloads_fail_without_retry(database_url, job_type, payload,
                                                             message):
    result = run_handler(job_type, payload)
    assert not result.success and result.should_retry is False
    assert message in (result.error or "")


def test_unknown_review_plan_and_foreign_records_fail_without_retry(make_user, add_events):
    ada, bob = make_user(), make_user(name="Bob")
    result = run_handler("GENERATE_TOMORROW_PLAN",
                         {"userId": ada, "reviewId": "nope", "targetDate": "2026-03-11"})
    assert "review 'nope' does not exist" in result.error and not result.should_retry
    result = run_handler("SUGGEST_UOM_UPDATE", {"userId": ada, "dailyPlanId": "nope"})
    assert "daily plan 'nope' does not exist" in result.error and not result.should_retry
    result = run_handler("GENERATE_INSIGHTS", {"userId": ada, "triggerType": "pattern_created",
                                               "patternId": "nope"})
    assert "pattern 'nope'" in result.error and not result.should_retry
    result = run_handler("GENERATE_INSIGHTS", {"userId": ada, "triggerType": "new_event",
                                               "eventId": "nope"})
    assert "event 'nope' does not exist" in result.error and not result.should_retry
    [event] = add_events(bob, [(datetime(2026, 3, 10, 8, tzinfo=UTC), "ok")])
    result = run_handler("DETECT_PATTERNS",
                         {"userId": ada, "triggerEventId": event, "interpretationId": "i"})
    assert "belongs to another user" in result.error and not result.should_retry
    result = run_handler("DETECT_PATTERNS",
                         {"userId": bob, "triggerEventId": event, "interpretationId": "i"})
    assert "interpretation 'i' of event" in result.error and not result.should_retry
    review = run_handler("GENERATE_REVIEW", {"userId": bob, "type": "DAILY",
                                             "periodKey": "2026-03-10", "timezone": PARIS})
    result = run_handler("GENERATE_TOMORROW_PLAN", {"userId": ada, "reviewId":
                         review.data["reviewId"], "targetDate": "2026-03-11"})
    assert "belongs to another user" in result.error and not result.should_retry


# -- DETECT_PATTERNS and GENERATE_INSIGHTS ---------------------------------------------------


def test_detect_patterns_creates_then_reports_no_change(make_user, add_events):
    user = make_user()
    events = add_events(user, sample_entries(load_timezone(PARIS), date(2026, 3, 20)))
    interpret_all(events)
    last = rows('SELECT * FROM "Interpretation" WHERE "eventId" = :e', e=events[-1])[0]
    payload = {"userId": user, "triggerEventId": events[-1], "interpretationId": last.id}
    created = run_handler("DETECT_PATTERNS", payload)
    assert created.data["outcome"] == "CREATED_NEW_PATTERN"
    assert created.data["patternsCreated"] == scalar('SELECT count(*) FROM "Pattern"') > 3
    [insights_job] = jobs_of("GENERATE_INSIGHTS")
    assert insights_job.payload["triggerType"] == "pattern_created"
    assert insights_job.payload["patternId"] == created.data["patternId"]
    assert scalar('SELECT count(*) FROM "Pattern" WHERE id = :p',
                  p=created.data["patternId"]) == 1
    work = rows('SELECT * FROM "Pattern" WHERE key = :k', k="work|any|mood:negative")[0]
    assert work.support >= 10 and work.confidence >= 0.7

    before = rows('SELECT * FROM "Interpretation" WHERE "eventId" = :e', e=events[-2])[0]
    again = run_handler("DETECT_PATTERNS", {**payload, "triggerEventId": events[-2],
                                            "interpretationId": before.id})
    assert again.data["outcome"] == "NO_PATTERN"
    assert len(jobs_of("GENERATE_INSIGHTS")) == 1  # nothing new: no insights job


def test_generate_insights_answers_and_stores_each_answer_once(make_user, add_events):
    user = make_user()
    events = add_events(user, sample_entries(load_timezone(PARIS), date(2026, 3, 20)))
    interpret_all(events)
    interp = scalar('SELECT id FROM "Interpretation" WHERE "eventId" = :e', e=events[-1])
    run_handler("DETECT_PATTERNS", {"userId": user, "triggerEventId": events[-1],
                                    "interpretationId": interp})
    [job] = jobs_of("GENERATE_INSIGHTS")
    first = run_handler("GENERATE_INSIGHTS", job.payload)
    assert first.success, first.error
    assert first.data["questionsExplored"] == 7
    assert first.data["questionsAnswerable"] == first.data["insightsCreated"] >= 4
    second = run_handler("GENERATE_INSIGHTS", job.payload)
    assert second.data["insightsCreated"] == 0
    assert scalar('SELECT count(*) FROM "Insight"') == first.data["insightsCreated"]
    drains = rows('SELECT * FROM "Insight" WHERE "questionKey" = :q', q="what_drains_you")[0]
    assert drains.answerKey == "work|any|mood:negative" and drains.patternId is not None


# -- GENERATE_REVIEW: local days, DST, ISO week 53 -------------------------------------------


def review(user, kind, key, tz=PARIS):
    result = run_handler("GENERATE_REVIEW", {"userId": user, "type": kind, "periodKey": key,
                                             "timezone": tz})
    assert result.success, result.error
    return result.data


def test_daily_review_counts_the_local_day_and_plans_the_next_local_day(make_user, add_events):
    user = make_user("America/Los_Angeles")
    add_events(user, [
        (datetime(2026, 3, 10, 6, 59, tzinfo=UTC), "23:59 on the 9th (PDT, UTC-7)"),
        (datetime(2026, 3, 10, 16, 0, tzinfo=UTC), "Great run in the park"),
        # 23:30 on the 10th in Los Angeles is already the 11th in UTC.
        (datetime(2026, 3, 11, 6, 30, tzinfo=UTC), "Exhausted after work, stressed"),
        (datetime(2026, 3, 11, 7, 0, tzinfo=UTC), "00:00 on the 11th: the next day"),
    ])
    data = review(user, "DAILY", "2026-03-10", "America/Los_Angeles")
    assert data["eventCount"] == 2
    assert data["targetDate"] == "2026-03-11"
    [plan_job] = jobs_of("GENERATE_TOMORROW_PLAN")
    assert plan_job.payload == {"userId": user, "reviewId": data["reviewId"],
                                "targetDate": "2026-03-11"}
    assert plan_job.idempotencyKey == f"tomorrow:{user}:2026-03-11"
    [row] = rows('SELECT * FROM "Review"')
    assert row.summary["moodTrend"] == "falling"
    assert (row.periodEnd - row.periodStart).total_seconds() == 24 * 3600


def test_daily_review_on_a_daylight_saving_day(make_user, add_events):
    user = make_user(PARIS)
    add_events(user, [
        (datetime(2026, 3, 28, 22, 59, tzinfo=UTC), "23:59 on the 28th"),
        (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), "00:30 on the 29th"),
        (datetime(2026, 3, 29, 21, 30, tzinfo=UTC), "23:30 on the 29th, summer time"),
        (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), "00:00 on the 30th"),
    ])
    data = review(user, "DAILY", "2026-03-29")
    assert data["eventCount"] == 2 and data["targetDate"] == "2026-03-30"
    [row] = rows('SELECT * FROM "Review"')
    assert (row.periodEnd - row.periodStart).total_seconds() == 23 * 3600
    # Autumn: the 25-hour day ends at the 31 October... of its own year, and plans the 26th.
    assert review(user, "DAILY", "2026-10-25")["targetDate"] == "2026-10-26"


def test_weekly_review_of_iso_week_53_and_monthly_chain_no_plan(make_user, add_events):
    user = make_user(PARIS)
    add_events(user, [
        (datetime(2026, 12, 28, 22, 30, tzinfo=UTC), "Monday 28 Dec 23:30 Paris: week 53"),
        (datetime(2027, 1, 3, 22, 30, tzinfo=UTC), "Sunday 3 Jan 23:30 Paris: week 53"),
        (datetime(2027, 1, 3, 23, 30, tzinfo=UTC), "Monday 4 Jan 00:30 Paris: 2027-W01"),
    ])
    assert review(user, "WEEKLY", "2026-W53")["eventCount"] == 2
    assert review(user, "MONTHLY", "2027-01")["eventCount"] == 2
    assert jobs_of("GENERATE_TOMORROW_PLAN") == []  # only DAILY reviews plan tomorrow
    assert review(user, "WEEKLY", "2026-W53")["eventCount"] == 2  # again: same row updated
    assert scalar('SELECT count(*) FROM "Review"') == 2


def test_review_reads_entries_not_interpreted_yet_and_stored_ones_alike(make_user, add_events):
    user = make_user(PARIS)
    events = add_events(user, [(datetime(2026, 3, 10, 7, tzinfo=UTC), "Lovely walk, happy"),
                               (datetime(2026, 3, 10, 18, tzinfo=UTC), "Awful day at work")])
    before = review(user, "DAILY", "2026-03-10")
    interpret_all(events)
    after = review(user, "DAILY", "2026-03-10")
    assert before["headline"] == after["headline"]
    assert scalar('SELECT count(*) FROM "Review"') == 1


# -- GENERATE_TOMORROW_PLAN and SUGGEST_UOM_UPDATE -------------------------------------------


def chain_to_plan(user, events, day="2026-03-20"):
    interpret_all(events)
    interp = scalar('SELECT id FROM "Interpretation" WHERE "eventId" = :e', e=events[-1])
    run_handler("DETECT_PATTERNS", {"userId": user, "triggerEventId": events[-1],
                                    "interpretationId": interp})
    data = review(user, "DAILY", day)
    job = [j for j in jobs_of("GENERATE_TOMORROW_PLAN") if j.payload["reviewId"] ==
           data["reviewId"]][0]
    plan = run_handler("GENERATE_TOMORROW_PLAN", job.payload)
    assert plan.success, plan.error
    return plan.data


def test_plan_rests_on_patterns_and_chains_the_manual_suggestion(make_user, add_events):
    user = make_user(PARIS)
    events = add_events(user, sample_entries(load_timezone(PARIS), date(2026, 3, 20)))
    plan = chain_to_plan(user, events)
    [row] = rows('SELECT * FROM "DailyPlan"')
    assert row.targetDate == date(2026, 3, 21) and row.id == plan["dailyPlanId"]
    assert any(item["patternId"] for item in row.items)
    assert row.focus.startswith("Saturday")
    [job] = jobs_of("SUGGEST_UOM_UPDATE")
    assert job.payload == {"userId": user, "dailyPlanId": row.id}
    assert job.idempotencyKey == f"uom:{row.id}"

    first = run_handler("SUGGEST_UOM_UPDATE", job.payload)
    assert first.data["suggestionGenerated"] is True
    again = run_handler("SUGGEST_UOM_UPDATE", job.payload)
    assert again.data["suggestionId"] == first.data["suggestionId"]
    [suggestion] = rows('SELECT * FROM "UomSuggestion"')
    assert suggestion.status == "PROPOSED" and suggestion.patternKey
    assert "for me" in suggestion.statement


def test_manual_suggestion_not_repeated_for_a_pattern_offered_or_held(make_user, add_events):
    user = make_user(PARIS)
    events = add_events(user, sample_entries(load_timezone(PARIS), date(2026, 3, 20)))
    chain_to_plan(user, events)
    first = run_handler("SUGGEST_UOM_UPDATE", jobs_of("SUGGEST_UOM_UPDATE")[0].payload).data

    def next_suggestion(friday: str, saturday: str):
        review(user, "DAILY", friday)
        [job] = [j for j in jobs_of("GENERATE_TOMORROW_PLAN")
                 if j.payload["targetDate"] == saturday]
        plan = run_handler("GENERATE_TOMORROW_PLAN", job.payload).data
        return run_handler("SUGGEST_UOM_UPDATE", {"userId": user,
                                                  "dailyPlanId": plan["dailyPlanId"]}).data

    second = next_suggestion("2026-03-27", "2026-03-28")
    assert second["patternKey"] != first["patternKey"]  # the first is still waiting for an answer
    with transaction() as conn:  # the user takes every pattern into the manual
        conn.execute(text('INSERT INTO "UomEntry" ("userId", "patternKey", statement) '
                          'SELECT "userId", key, description FROM "Pattern"'))
    third = next_suggestion("2026-04-03", "2026-04-04")
    assert third["suggestionGenerated"] is False and "already" in third["reason"]
    assert scalar('SELECT count(*) FROM "UomSuggestion" WHERE status = :s', s="PROPOSED") == 2


# -- the seed's relation from a job to its user, where the application declares it ---------


def test_a_job_of_an_unknown_user_is_refused_and_a_users_jobs_go_with_them(make_user,
                                                                           user_foreign_key):
    with pytest.raises(InvalidJob, match="user does not exist.*ghost"):
        enqueue_generate_review({"userId": "ghost", "type": "DAILY", "periodKey": "2026-03-10",
                                 "timezone": PARIS})
    user = make_user()
    enqueue_generate_review({"userId": user, "type": "DAILY", "periodKey": "2026-03-10",
                             "timezone": PARIS})
    assert len(jobs_of("GENERATE_REVIEW")) == 1
    with transaction() as conn:
        conn.execute(text('DELETE FROM "User" WHERE id = :u'), {"u": user})
    assert jobs_of("GENERATE_REVIEW") == []


def test_rows_written_with_plain_sql_are_handled_too(database_url):
    """Other services write users and events with SQL alone: ids and names are optional."""
    with transaction() as conn:
        user = conn.execute(text("""INSERT INTO "User" (timezone) VALUES ('Asia/Kolkata')
                                    RETURNING id""")).scalar_one()
        event = conn.execute(text("""INSERT INTO "Event" ("userId", text, "occurredAt")
                                     VALUES (:u, 'Happy after yoga', '2026-03-10T18:45:00Z')
                                     RETURNING id"""), {"u": user}).scalar_one()
    result = run_handler("INTERPRET_EVENT", {"eventId": event})
    assert result.success and result.data["localDate"] == "2026-03-11"  # 00:15 in Kolkata
    assert result.data["timeOfDay"] == "night" and result.data["mood"] == "positive"


def test_a_user_needs_a_real_time_zone(database_url):
    with pytest.raises(ValueError, match="unknown time zone"), transaction() as conn:
        store.create_user(conn, "Ada", "Mars/Olympus_Mons")


def test_concurrent_pattern_detection_of_one_user_reports_each_pattern_created_once(
        make_user, add_events):
    user = make_user()
    events = add_events(user, sample_entries(load_timezone(PARIS), date(2026, 3, 20)))
    interpret_all(events)
    interps = dict(rows('SELECT "eventId", id FROM "Interpretation"'))
    barrier = threading.Barrier(4)

    def detect(event_id: str):
        barrier.wait()
        return run_handler("DETECT_PATTERNS", {"userId": user, "triggerEventId": event_id,
                                               "interpretationId": interps[event_id]})

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(detect, events[-4:]))
    assert all(r.success for r in results), [r.error for r in results]
    assert sum(r.data["patternsCreated"] for r in results) == scalar(
        'SELECT count(*) FROM "Pattern"')
    assert [r.data["outcome"] for r in results].count("CREATED_NEW_PATTERN") == 1
    assert len(jobs_of("GENERATE_INSIGHTS")) == 1
