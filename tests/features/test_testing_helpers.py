"""skiplock.testing, used the way an application's tests would use it: the built-in
chain drained inline, and assertions on what was enqueued."""

from __future__ import annotations

from datetime import date

import pytest

from skiplock import JobResult, enqueue, register_handler, testing
from skiplock.handlers import unregister_handler
from skiplock.handlers.demo import pending_jobs, seed_demo
from tests.handlers.chains import assert_chains_complete


def test_drain_runs_the_whole_chain_inline_against_the_real_database():
    seeded = seed_demo("Europe/Paris", days=7, today=date(2026, 3, 16))
    testing.assert_enqueued("INTERPRET_EVENT")
    testing.assert_enqueued("GENERATE_REVIEW", {"userId": seeded.user_id, "type": "DAILY"})
    report = testing.drain()
    assert pending_jobs(seeded.user_id) == 0
    assert_chains_complete(seeded)
    assert report.outcomes.get("completed", 0) == len(report.ran) > 10, report.errors
    testing.refute_enqueued("INTERPRET_EVENT")
    done = testing.enqueued("SUGGEST_UOM_UPDATE", statuses=["COMPLETED"])
    assert done and all(j.status == "COMPLETED" for j in done)


def test_failures_are_recorded_retried_and_dead_lettered_not_raised():
    calls = []

    def flaky(payload: dict, job_id: str) -> JobResult:
        calls.append(payload["kind"])
        if payload["kind"] == "raise":
            raise RuntimeError("boom")
        if payload["kind"] == "snooze" and calls.count("snooze") < 2:
            return JobResult.snooze(3600)
        return JobResult(True, data={"ok": True})

    register_handler("TESTING_FLAKY", flaky, max_attempts=2)
    try:
        failing = enqueue("TESTING_FLAKY", {"kind": "raise"})
        report = testing.drain(["TESTING_FLAKY"])
        assert [r.outcome for r in report.ran] == ["retried"]  # the retry is not due yet
        assert report.errors == [f"TESTING_FLAKY {failing}: RuntimeError: boom"]
        report = testing.drain(["TESTING_FLAKY"], run_scheduled=True)
        assert [r.outcome for r in report.ran] == ["dead_lettered"]
        testing.assert_enqueued("TESTING_FLAKY", {"kind": "raise"}, statuses=["DEAD_LETTER"])

        enqueue("TESTING_FLAKY", {"kind": "snooze"})
        report = testing.drain(["TESTING_FLAKY"], run_scheduled=True)
        assert [r.outcome for r in report.ran] == ["snoozed", "completed"]
    finally:
        unregister_handler("TESTING_FLAKY")


def test_assertions_say_what_the_queue_holds_and_drain_stops_a_loop():
    enqueue("SOMETHING_ELSE", {"a": 1})
    with pytest.raises(AssertionError, match=r'(?s)expected SEND_EMAIL.*SOMETHING_ELSE \{"a": 1\}'):
        testing.assert_enqueued("SEND_EMAIL", {"to": "x"})
    testing.assert_enqueued("SOMETHING_ELSE", {"a": 1}, count=1)

    def again(payload: dict, job_id: str) -> JobResult:
        enqueue("TESTING_LOOP", {"n": payload["n"] + 1})
        return JobResult(True)

    register_handler("TESTING_LOOP", again)
    try:
        enqueue("TESTING_LOOP", {"n": 0})
        with pytest.raises(testing.DrainLimit):
            testing.drain(["TESTING_LOOP"], max_jobs=5)
    finally:
        unregister_handler("TESTING_LOOP")
