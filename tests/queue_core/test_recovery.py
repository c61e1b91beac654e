from __future__ import annotations

from skiplock import queue_core as q
from tests.queue_core.helpers import age_lock, row, sql


def _due_now() -> None:
    sql('UPDATE "WorkerJob" SET "availableAt" = now() WHERE status = \'PENDING\'')


def test_a_rescue_is_a_free_interruption_with_a_back_off_and_a_clear_error():
    q.enqueue("X", {}, max_attempts=3)
    [job] = q.claim("host1:123:abc")
    age_lock(job.id, 600)
    recovered = q.recover_stuck(300)
    assert recovered.retried == [job.id] and recovered.dead == []
    r = row(job.id)
    assert r.st == "PENDING" and r.attempts == 0 and r.interruptions == 1 and r.lockedBy is None
    assert "host1:123:abc stopped sending heartbeats during attempt 1 of 3" in r.lastError
    assert "interruption 1 of 3 free: attempt not counted" in r.lastError
    assert q.claim("w") == []  # the back-off: about 2 s
    assert (r.availableAt - r.startedAt).total_seconds() > 1


def test_a_stuck_job_without_attempts_or_free_interruptions_left_is_dead_lettered():
    q.enqueue("X", {}, max_attempts=1)
    for _ in range(3):  # the free interruptions: the attempt is given back each time
        [job] = q.claim("w")
        age_lock(job.id, 600)
        assert q.recover_stuck(300).retried == [job.id]
        _due_now()
    [job] = q.claim("w")
    age_lock(job.id, 600)
    recovered = q.recover_stuck(300)
    assert recovered.dead == [job.id]
    r = row(job.id)
    assert r.st == "DEAD_LETTER" and r.completedAt is not None and r.interruptions == 3
    assert "no attempts left (its 3 free interruptions are used up)" in r.lastError


def test_poison_job_that_kills_every_worker_ends_dead_lettered_after_max_attempts_plus_3_runs():
    q.enqueue("POISON", {}, max_attempts=3)
    runs = 0
    while (claimed := q.claim(f"w{runs}")):
        runs += 1
        age_lock(claimed[0].id, 600)  # the worker died: its heartbeats stopped
        q.recover_stuck(300)
        _due_now()
    assert runs == 3 + 3
    assert q.claim("w-last") == []
    assert sql('SELECT status::text FROM "WorkerJob"')[0][0] == "DEAD_LETTER"


def test_live_jobs_are_left_alone_and_batches_cover_everything():
    q.enqueue_many([{"type": "X", "payload": {}} for _ in range(25)])
    jobs = q.claim("w", limit=25)
    for job in jobs[:20]:
        age_lock(job.id, 600)
    recovered = q.recover_stuck(300, batch_size=7)
    assert len(recovered.retried) == 20
    assert {row(j.id).st for j in jobs[20:]} == {"PROCESSING"}
