"""The batch statement sent ahead (pool/ahead.py): a child whose jobs write nothing
sends the statement that completes its batch and claims the next one before the
batch's last job runs, and reads its answer after.

One child, fixed batches of five, jobs that never touch their transaction
(`TEST_QUIET`). The idle child claims one job alone (the opener), and claims
the next five when it has run; that claim was full, so it sends the claim of
the five after them ahead of running the fifth.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from tests.pool.conftest import Jobs, Pool, wait_for
from tests.pool.test_group_commit import HANDLERS, _enqueue_quiet, _quiet_pool

# How long the batch's last job runs: the claim sent ahead of it must run meanwhile.
LAST_JOB_S = 0.3


def _first_start(jobs: Jobs, job_id: str) -> datetime:
    with jobs.engine.connect() as conn:
        return conn.execute(text("SELECT min(at) FROM pool_test_starts WHERE job_id = :j"),
                            {"j": job_id}).scalar_one()


def _enqueue_batches(jobs: Jobs, last_payload: dict[str, object] | None = None,
                     middle: dict[int, dict[str, object]] | None = None) -> list[str]:
    """An opener (claimed alone), then five (claimed with the opener's completion),
    then five more (claimed while the fifth of those runs), in priority order."""
    payloads: list[dict[str, object]] = [{} for _ in range(11)]
    for index, payload in (middle or {}).items():
        payloads[index] = payload
    if last_payload:
        payloads[5] = last_payload
    from skiplock.queue_core import enqueue_many

    with jobs.engine.begin() as conn:  # one transaction: the opener's claim sees all
        return enqueue_many([{"type": "TEST_QUIET", "payload": payload, "priority": priority}
                             for priority, payload in zip(range(20, 9, -1), payloads,
                                                          strict=True)], conn=conn)


@pytest.mark.parametrize("listen", [True, False], ids=["on the LISTEN connection",
                                                    "on its own with --no-listen"])
def test_the_next_batch_is_claimed_while_the_last_job_of_this_one_runs(
    start_pool: Callable[..., Pool], jobs: Jobs, listen: bool
) -> None:
    if listen:
        _quiet_pool(start_pool, jobs)
    else:
        start_pool("--concurrency", "1", "--batch-size", "5", "--commit-delay-ms", "60000",
                   "--no-listen", "--poll-min", "0.01", handlers=HANDLERS)
        _enqueue_quiet(jobs, [{}], priority=99)
        wait_for(lambda: jobs.all_done(1), 15, "the first job")
    ids = _enqueue_batches(jobs, last_payload={"sleep": LAST_JOB_S})
    wait_for(lambda: jobs.all_done(12), 20, "eleven quiet jobs")
    rows = {job_id: jobs.get(job_id) for job_id in ids}
    # Jobs 1-5 were claimed when job 0 had completed (in the statement that
    # completed it), jobs 6-10 after job 4 had started and while job 5 (their
    # batch's last) ran: the server ran that claim during the job. (Not surely
    # before job 5's start is recorded: the child sends the statement and goes on
    # without waiting, and the two race to the server.)
    assert {rows[j]["startedAt"] for j in ids[1:6]} == {rows[ids[0]]["completedAt"]}
    claimed_at = {rows[j]["startedAt"] for j in ids[6:11]}
    assert len(claimed_at) == 1, claimed_at
    last_start = _first_start(jobs, ids[5])
    assert _first_start(jobs, ids[4]) < claimed_at.pop() < last_start + timedelta(
        seconds=LAST_JOB_S)
    # The fifth job's completion rode with the next batch's statement.
    assert rows[ids[5]]["completedAt"] == rows[ids[6]]["completedAt"]
    assert all(len(jobs.starts(job_id)) == 1 for job_id in ids)
    assert all(rows[j]["attempts"] == 1 and rows[j]["lastError"] is None for j in ids)


def test_an_answer_lost_with_its_connection_gives_its_jobs_back_uncharged(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    _quiet_pool(start_pool, jobs)
    # Job 2 keeps its row locked: the statement sent before job 5 (completing 1-4)
    # waits for it; job 5 ends that statement's backend, then lets the lock go.
    ids = _enqueue_batches(jobs, last_payload={"cut_ahead": True},
                           middle={2: {"lock_own_row": True}})

    def settled() -> bool:
        jobs.hurry()
        return jobs.all_done(12)

    wait_for(settled, 30, "every job completed after the lost answer")
    rows = {job_id: jobs.get(job_id) for job_id in ids}
    # Jobs 1-4 had finished, but their completions never committed: they ran again,
    # the lost run not charged (one attempt counted, one interruption).
    for job_id in ids[1:5]:
        assert len(jobs.starts(job_id)) == 2, job_id
        assert (rows[job_id]["attempts"], rows[job_id]["interruptions"]) == (1, 1)
    # The job that ran meanwhile completed once, and so did the others.
    for job_id in [ids[0], *ids[5:]]:
        assert len(jobs.starts(job_id)) == 1, job_id
        assert rows[job_id]["attempts"] == 1 and not rows[job_id]["interruptions"]


def test_a_claim_read_too_late_to_start_safely_is_given_back_unrun(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # Heartbeat 0.5 s: a lease of 3 s, and a claim read more than 1 s after it was
    # sent is not started. Job 5 (short, as far as the child knows) runs 1.5 s.
    _quiet_pool(start_pool, jobs)
    ids = _enqueue_batches(jobs, last_payload={"sleep": 1.5})
    wait_for(lambda: jobs.all_done(12), 30, "every job completed")
    for job_id in ids[6:]:
        row = jobs.get(job_id)
        assert len(jobs.starts(job_id)) == 1, job_id
        assert row["attempts"] == 1, dict(row)  # the give-back was not charged
        assert "claimed ahead" in row["lastError"], row["lastError"]
    assert all(jobs.get(j)["lastError"] is None for j in ids[:6])


def test_jobs_claimed_ahead_of_a_job_that_overruns_go_back_at_once(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    _quiet_pool(start_pool, jobs)
    ids = _enqueue_batches(jobs, last_payload={"sleep": 6})
    last, ahead = ids[5], ids[6:]
    wait_for(lambda: _first_start(jobs, last) is not None, 15, "the long last job")
    # Claimed while it runs, and given back (unrun, uncharged) once it ran past twice
    # its expected time, long before it ends: any idle child may take them, and no
    # lease of theirs waits for this child.
    wait_for(lambda: all(jobs.get(j)["status"] == "PENDING" for j in ahead), 4,
             "the jobs claimed ahead to go back")
    assert jobs.get(last)["status"] == "PROCESSING"
    for job_id in ahead:
        row = jobs.get(job_id)
        assert "ran past" in row["lastError"] and "never started" in row["lastError"]
        assert (row["attempts"], row["interruptions"]) == (0, None), dict(row)
    wait_for(lambda: jobs.all_done(12), 20, "every job")
    assert all(len(jobs.starts(job_id)) == 1 for job_id in ids)


def test_a_commit_due_before_a_job_runs_on_the_server_while_the_job_runs(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # A commit per job: the first job's completion is due before the second job. Its
    # row stays locked by another session until the second job lets it go: a child
    # that waited for that commit before starting the second job would wait for ever
    # (or until its statement's bound, and then run the first job again).
    start_pool("--concurrency", "1", "--batch-size", "5", "--commit-delay-ms", "0",
               handlers=HANDLERS)
    from skiplock.queue_core import enqueue_many

    with jobs.engine.begin() as conn:  # the opener's claim alone, then the two together
        ids = enqueue_many([{"type": "TEST_QUIET", "payload": payload, "priority": priority}
                            for payload, priority in (({}, 30), ({"lock_own_row": True}, 20),
                                                      ({"release_held": True}, 10))],
                           conn=conn)
    wait_for(lambda: jobs.all_done(3), 20, "three quiet jobs")
    rows = [jobs.get(job_id) for job_id in ids]
    assert rows[1]["startedAt"] == rows[2]["startedAt"]  # one batch
    assert all(len(jobs.starts(job_id)) == 1 for job_id in ids)
    assert all(row["attempts"] == 1 and row["lastError"] is None and not row["interruptions"]
               for row in rows), [dict(row) for row in rows]
