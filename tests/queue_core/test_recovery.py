from __future__ import annotations

from skiplock import queue_core as q
from tests.queue_core.helpers import age_lock, row


def test_stuck_job_with_attempts_left_goes_back_to_pending_with_a_clear_error():
    q.enqueue("X", {}, max_attempts=3)
    [job] = q.claim("host1:123:abc")
    age_lock(job.id, 600)
    recovered = q.recover_stuck(300)
    assert recovered.retried == [job.id] and recovered.dead == []
    r = row(job.id)
    assert r.st == "PENDING" and r.attempts == 1 and r.lockedBy is None
    assert "host1:123:abc stopped sending heartbeats during attempt 1 of 3" in r.lastError
    assert "retrying" in r.lastError


def test_stuck_job_without_attempts_left_is_dead_lettered():
    q.enqueue("X", {}, max_attempts=1)
    [job] = q.claim("w")
    age_lock(job.id, 600)
    recovered = q.recover_stuck(300)
    assert recovered.dead == [job.id]
    r = row(job.id)
    assert r.st == "DEAD_LETTER" and r.completedAt is not None
    assert "no attempts left" in r.lastError


def test_poison_job_that_kills_every_worker_ends_dead_lettered():
    q.enqueue("POISON", {}, max_attempts=3)
    for attempt in (1, 2, 3):
        [job] = q.claim(f"w{attempt}")
        assert job.attempts == attempt
        age_lock(job.id, 600)  # the worker died: its heartbeats stopped
        q.recover_stuck(300)
    assert row(job.id).st == "DEAD_LETTER"
    assert q.claim("w4") == []


def test_live_jobs_are_left_alone_and_batches_cover_everything():
    q.enqueue_many([{"type": "X", "payload": {}} for _ in range(25)])
    jobs = q.claim("w", limit=25)
    for job in jobs[:20]:
        age_lock(job.id, 600)
    recovered = q.recover_stuck(300, batch_size=7)
    assert len(recovered.retried) == 20
    assert {row(j.id).st for j in jobs[20:]} == {"PROCESSING"}
