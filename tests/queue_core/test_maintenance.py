from __future__ import annotations

import pytest

from skiplock import queue_core as q
from skiplock.queue_core.errors import InvalidJob
from tests.queue_core.helpers import count, row, sql


def test_stats_counts_statuses_ready_scheduled_and_oldest_ready_age():
    q.enqueue("A", {})
    q.enqueue("A", {})
    q.enqueue("B", {}, delay=3600)
    sql("""UPDATE "WorkerJob" SET "availableAt" = now() - interval '90 seconds'
           WHERE type = 'A' AND id = (SELECT min(id) FROM "WorkerJob" WHERE type = 'A')""")
    q.enqueue("C", {}, max_attempts=1)
    [job] = q.claim("w", types=["C"])
    q.fail(job, "x")
    q.enqueue("D", {})
    [d] = q.claim("w", types=["D"])
    s = q.stats()
    assert (s.pending, s.processing, s.dead_letter, s.completed) == (3, 1, 1, 0)
    assert (s.ready, s.scheduled) == (2, 1)
    assert s.by_type == {"A": 2, "B": 1}
    assert s.ready_by_type == {"A": 2, "B": 0}
    assert s.processing_by_type == {"D": 1}
    assert 89 <= s.oldest_ready_age_s <= 100
    d_json = s.to_dict()
    assert d_json["deadLetter"] == 1 and d_json["byType"] == {"A": 2, "B": 1}
    assert q.complete(d)


def test_cleanup_deletes_only_old_finished_jobs_in_batches():
    ids = q.enqueue_many([{"type": "X", "payload": {}} for _ in range(23)])
    for job in q.claim("w", limit=23):
        q.complete(job)
    sql("""UPDATE "WorkerJob" SET "completedAt" = now() - interval '8 days'
           WHERE id = ANY(:ids)""", ids=ids[:20])
    q.enqueue("PENDING_OLD", {})
    sql("""UPDATE "WorkerJob" SET "createdAt" = now() - interval '30 days'
           WHERE type = 'PENDING_OLD'""")
    assert q.cleanup("7d", batch_size=6) == 20
    assert count() == 4
    assert count("type = 'PENDING_OLD'") == 1


def test_cleanup_refuses_unfinished_statuses():
    with pytest.raises(InvalidJob):
        q.cleanup("1d", statuses=["PENDING"])


def test_retry_dead_gives_fresh_attempts():
    a = q.enqueue("A", {}, max_attempts=1)
    b = q.enqueue("B", {}, max_attempts=1)
    alive = q.enqueue("C", {})
    for job in q.claim("w", limit=2, types=["A", "B"]):
        q.fail(job, "boom")
    assert q.retry_dead([a, alive]) == [a]
    r = row(a)
    assert r.st == "PENDING" and r.attempts == 0 and r.lastError == "boom"
    assert q.retry_dead(job_type="B") == [b]
    assert q.retry_dead(all_dead=True) == []
    with pytest.raises(InvalidJob):
        q.retry_dead()


def test_get_job_returns_the_row_or_none():
    job_id = q.enqueue("X", {"a": 1})
    job = q.get_job(job_id)
    assert job is not None and job.payload == {"a": 1} and job.to_dict()["maxAttempts"] == 3
    assert q.get_job("nope") is None


def test_a_job_whose_json_python_cannot_decode_can_still_be_shown():
    from click.testing import CliRunner

    from skiplock.cli.app import main

    sql("""INSERT INTO "WorkerJob" (id, type, payload, result) VALUES
           ('deep', 'X', ('{"x": ' || repeat('[', 3000) || repeat(']', 3000) || '}')::jsonb,
            ('{"n": ' || repeat('9', 5000) || '}')::jsonb)""")
    job = q.get_job("deep")
    assert job is not None and job.payload == {}
    assert job.decode_error is not None and "nested too deeply" in job.decode_error
    assert isinstance(job.result, str) and job.result.startswith("<the result cannot be shown")
    shown = CliRunner().invoke(main, ["job", "deep"])
    assert shown.exit_code == 0 and "the payload cannot be used" in shown.output
