"""stats, jobs, pause and resume through click's runner."""

from __future__ import annotations

import json

from skiplock.queue_core import claim, enqueue, fail
from tests.ops.helpers import one_error_line, run
from tests.queue_core.helpers import count, row, sql


def test_stats_counts_statuses_types_throughput_dead_letters_and_table_health():
    for i in range(3):
        enqueue("A", {"i": i})
    enqueue("B", {}, delay=3600)
    enqueue("C", {}, max_attempts=1)
    [job] = claim("w", types=["C"])
    fail(job, "boom")
    [running] = claim("w", types=["A"])
    sql("""INSERT INTO "WorkerJob" (type, status, "completedAt") VALUES ('A', 'COMPLETED', now())""")
    data = json.loads(run("stats", "--json").output)
    assert (data["pending"], data["processing"], data["deadLetter"]) == (3, 1, 1)
    assert data["ready"] == 2 and data["scheduled"] == 1
    assert data["byType"] == {"A": 2, "B": 1}
    assert data["processingByType"] == {"A": 1}
    assert data["deadLetterByType"] == {"C": 1}
    assert data["completedLastMinutes"]["5"] == 1 and data["deadLetteredLastMinutes"]["1"] == 1
    assert data["oldestReadyAgeSeconds"] is not None
    assert data["table"]["totalBytes"] > 0 and "deadTuples" in data["table"]
    assert "vacuumHorizonHolder" in data["table"]
    exact = json.loads(run("stats", "--json", "--exact").output)
    assert exact["completed"] == 1 and exact["estimated"] == []
    text = run("stats").output
    for fragment in ("pending", "dead letters by type", "oldest transaction holding vacuum back",
                     "completed: 1 in 1m"):
        assert fragment in text
    assert running.type == "A"


def test_stats_watch_repeats_until_interrupted(monkeypatch):
    import time

    calls = []

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    result = run("stats", "--json", "--watch", "0.5")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all("pending" in json.loads(line) for line in lines)
    assert run("stats", "--watch", "0").exit_code == 2


def test_jobs_filters_by_status_type_and_user():
    sql("""INSERT INTO "User" (id, name) VALUES ('u1', 'u1')""")
    a = enqueue("A", {}, user_id="u1")
    enqueue("B", {})
    enqueue("A", {}, max_attempts=1, priority=5)
    [dead] = claim("w", types=["A"])
    fail(dead, "first line\nsecond line")
    listed = json.loads(run("jobs", "--json").output)
    assert len(listed) == 3
    assert [j["id"] for j in json.loads(run("jobs", "--user-id", "u1", "--json").output)] == [a]
    pending_a = json.loads(run("jobs", "--status", "pending", "--type", "A", "--json").output)
    assert len(pending_a) == 1 and pending_a[0]["type"] == "A"
    dead_rows = json.loads(run("jobs", "--status", "DEAD_LETTER", "--json").output)
    assert [j["id"] for j in dead_rows] == [dead.id]
    assert len(json.loads(run("jobs", "--limit", "1", "--json").output)) == 1
    table = run("jobs", "--status", "dead_letter").output
    assert dead.id in table and "first line" in table and "second line" not in table
    assert run("jobs", "--status", "BOGUS").exit_code == 2
    assert run("jobs", "--limit", "0").exit_code == 2


def test_a_paused_type_is_not_claimed_until_resumed():
    a = enqueue("A", {}, priority=10)
    b = enqueue("B", {})
    result = run("pause", "A", "--reason", "upstream is down")
    assert result.output.strip() == "paused A"
    assert run("pause", "A").output.strip() == "A was already paused"
    assert [j.id for j in claim("w", limit=10)] == [b]
    assert claim("w", types=["A"]) == []
    assert row(a).st == "PENDING"
    data = json.loads(run("stats", "--json").output)
    assert data["paused"] == {"A": 1}
    assert "PAUSED" in run("stats").output
    assert run("resume", "A").output.strip() == "resumed A"
    assert [j.id for j in claim("w")] == [a]


def test_resume_of_a_type_that_is_not_paused_fails():
    one_error_line(run("resume", "NOPE"), "NOPE is not paused")
    assert count() == 0
