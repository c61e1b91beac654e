from __future__ import annotations

import pytest

from skiplock import queue_core as q
from skiplock.queue_core.backoff import backoff_base_s, backoff_s
from skiplock.queue_core.jobs import JobRef
from tests.queue_core.helpers import age_lock, row, sql


def test_complete_records_the_result_and_unlocks():
    q.enqueue("X", {})
    [job] = q.claim("w")
    assert q.complete(job, {"answer": 42})
    r = row(job.id)
    assert r.st == "COMPLETED" and r.result == {"answer": 42}
    assert r.completedAt is not None and r.lockedBy is None and r.lockedAt is None


def test_fail_with_attempts_left_retries_after_backoff():
    q.enqueue("X", {}, max_attempts=3)
    [job] = q.claim("w")
    assert q.fail(job, "boom") == "PENDING"
    r = row(job.id)
    assert r.st == "PENDING" and r.lastError == "boom" and r.attempts == 1
    wait = (r.availableAt - r.startedAt).total_seconds()
    assert 9 <= wait <= 11.5  # 5 * 2**1 s, +/-10 %
    assert q.claim("w") == []


def test_fail_without_retry_or_attempts_dead_letters():
    q.enqueue("X", {}, max_attempts=3)
    [job] = q.claim("w")
    assert q.fail(job, "bad payload", retry=False) == "DEAD_LETTER"
    assert row(job.id).st == "DEAD_LETTER"
    q.enqueue("Y", {}, max_attempts=1)
    [job] = q.claim("w")
    assert q.fail(job, "boom") == "DEAD_LETTER"
    r = row(job.id)
    assert r.st == "DEAD_LETTER" and r.completedAt is not None and r.lastError == "boom"


def test_fail_stores_unstorable_errors_cleanly():
    q.enqueue("X", {})
    [job] = q.claim("w")
    assert q.fail(job, "nul\x00inside " + "x" * 100_000) == "PENDING"
    error = row(job.id).lastError
    assert "\x00" not in error and error.startswith("nul\\x00inside")
    assert len(error) <= 64 * 1024 and error.endswith(" more characters]")


def test_release_gives_the_attempt_back():
    q.enqueue("X", {})
    [job] = q.claim("w")
    assert q.release(job, "worker shutting down")
    r = row(job.id)
    assert r.st == "PENDING" and r.attempts == 0 and r.lockedBy is None
    [again] = q.claim("w2")
    assert again.id == job.id and again.attempts == 1


def test_a_worker_whose_job_was_rescued_and_reclaimed_cannot_finish_it():
    q.enqueue("X", {}, max_attempts=5)
    [mine] = q.claim("worker-a")
    age_lock(mine.id, 3600)
    assert q.recover_stuck(60).retried == [mine.id]
    sql('UPDATE "WorkerJob" SET "availableAt" = now()')  # past the interruption's back-off
    [theirs] = q.claim("worker-b")
    assert theirs.id == mine.id and theirs.attempts == 1  # the rescue was a free interruption
    # worker-a comes back from a long pause: every change it tries is refused.
    assert q.complete(mine, {"stale": True}) is False
    assert q.fail(mine, "stale failure") is None
    assert q.release(mine, "stale release") is False
    assert q.heartbeat([mine]) == set()
    assert q.heartbeat([mine, theirs]) == {theirs.id}
    r = row(mine.id)
    assert r.st == "PROCESSING" and r.lockedBy == "worker-b" and r.result is None
    assert q.complete(theirs, {"fresh": True})
    assert row(mine.id).result == {"fresh": True}
    # and it cannot reopen a finished job either
    assert q.fail(theirs, "too late") is None
    assert row(mine.id).st == "COMPLETED"


def test_fencing_needs_the_same_attempt_too():
    q.enqueue("X", {})
    [job] = q.claim("w")
    assert q.complete(JobRef(job.id, "w", job.attempts + 1)) is False
    assert q.complete(JobRef(job.id, "other", job.attempts)) is False
    assert q.complete(JobRef(job.id, "w", job.attempts)) is True


def test_heartbeat_refreshes_locked_at():
    q.enqueue("X", {})
    [job] = q.claim("w")
    age_lock(job.id, 100)
    before = row(job.id).lockedAt
    assert q.heartbeat([job]) == {job.id}
    assert row(job.id).lockedAt > before
    assert q.recover_stuck(50).count == 0


def test_backoff_follows_the_seed_formula_with_cap_and_jitter():
    assert [backoff_base_s(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff_base_s(20) == 3600
    assert backoff_s(1, rand=lambda: 0.0) == pytest.approx(9.0)
    assert backoff_s(1, rand=lambda: 1.0) == pytest.approx(11.0)
    assert backoff_s(1, rand=lambda: 0.5) == pytest.approx(10.0)


def test_completion_inside_a_long_job_transaction_is_dated_when_it_happens():
    import time

    from skiplock.queue_core.database import db

    q.enqueue("X", {})
    [job] = q.claim("w")
    with db.get_engine().begin() as conn:
        conn.exec_driver_sql("SELECT 1")  # the job's transaction begins with the handler
        time.sleep(0.3)
        assert q.complete(job, conn=conn)
    r = row(job.id)
    assert (r.completedAt - r.startedAt).total_seconds() >= 0.3


HOSTILE_RESULTS = [
    None, {"q": 'say "hi"'}, {"b": "C:\\temp\\new"}, {"braces": "{a,b}", "null": "NULL"},
    ["NULL", None, "", ",", "\\\"", "}{"], "plain text", {"snow": "\u2603 \U0001f600"},
    {"nested": {"deep": [1, 2.5, True, {"x": "'quoted'"}]}},
]


@pytest.mark.parametrize("together", [False, True], ids=["complete_many", "with_the_claim"])
def test_results_with_quotes_backslashes_and_braces_are_stored_as_given(together: bool) -> None:
    """The completions go as array literals (queue_core/database/arrays.py): every character a
    result can hold must come back as it was, and the fence must still hold."""
    from skiplock.queue_core import lifecycle

    for n in range(len(HOSTILE_RESULTS) + 1):
        q.enqueue("X", {"n": n})
    jobs = q.claim('w "1" \\ {x}', limit=len(HOSTILE_RESULTS))
    stranger = q.claim("w2")[0]
    pairs = list(zip(jobs, HOSTILE_RESULTS, strict=True))
    stale = JobRef(stranger.id, stranger.locked_by, stranger.attempts + 1)  # fenced out
    if together:
        done, claimed = lifecycle.complete_and_claim([*pairs, (stale, "x")], 'w "1" \\ {x}', 0)
        assert claimed == []
    else:
        done = lifecycle.complete_many([*pairs, (stale, "x")])
    assert done == {j.id for j in jobs}
    for job, result in pairs:
        r = row(job.id)
        assert r.st == "COMPLETED" and r.result == result, (job.id, r.result, result)
    assert row(stranger.id).st == "PROCESSING"


def test_a_lease_not_to_be_written_is_only_read_yet_says_held_lost_or_cancelled() -> None:
    """`write=False` leaves a row as it is (the same row version), and the beat still
    tells which of those jobs are held, lost and asked to cancel (pool/heartbeats.py)."""
    from skiplock.queue_core import lifecycle

    for n in range(4):
        q.enqueue("X", {"n": n})
    written, kept, cancelled, gone = q.claim("w", limit=4)
    q.release(gone, "given back")
    assert q.cancel(cancelled.id).outcome == "cancelling"
    version = {j.id: sql('SELECT xmin::text FROM "WorkerJob" WHERE id = :id', id=j.id)[0][0]
               for j in (written, kept, cancelled)}
    renewal = lifecycle.renew_leases([written, kept, cancelled, gone],
                                     write=[True, False, False, False])
    assert renewal.renewed == {written.id}
    assert renewal.fresh == {kept.id, cancelled.id} and renewal.busy == frozenset()
    assert renewal.gone == {gone.id}
    assert renewal.held == {written.id, kept.id, cancelled.id}
    assert renewal.cancel_requested == {cancelled.id}
    after = {j.id: sql('SELECT xmin::text FROM "WorkerJob" WHERE id = :id', id=j.id)[0][0]
             for j in (written, kept, cancelled)}
    assert after[written.id] != version[written.id]
    assert after[kept.id] == version[kept.id] and after[cancelled.id] == version[cancelled.id]


def test_a_heartbeat_stores_progress_messages_as_given_and_keeps_its_fence() -> None:
    """Lease renewals go as array literals (queue_core/database/arrays.py) too: messages with
    quotes, backslashes, braces and commas come back as written, NULL progress keeps
    the last report, and a job held by nobody any more is not renewed."""
    from skiplock.queue_core import lifecycle
    from skiplock.queue_core.jobs import Progress

    messages = ['say "hi"', "C:\\temp", "{a,b}", "NULL", ",", "\u2603", None]
    for n in range(len(messages) + 1):
        q.enqueue("X", {"n": n})
    jobs = q.claim("w", limit=len(messages) + 1)
    *held, gone = jobs
    q.release(gone, "given back")  # no longer held: its renewal must not take
    reports = {j.id: Progress(None if m is None else 0.25 * (i % 4), m)
               for i, (j, m) in enumerate(zip(held, messages, strict=True))}
    renewal = lifecycle.renew_leases(jobs, reports)
    assert renewal.renewed == {j.id for j in held}
    assert gone.id in renewal.gone
    for i, (job, message) in enumerate(zip(held, messages, strict=True)):
        r = row(job.id)
        assert r.progressMessage == message, (r.progressMessage, message)
        assert r.progress == (None if message is None else 0.25 * (i % 4))
