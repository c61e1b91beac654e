"""Group commit: consecutive jobs of a child share a transaction (pool/group_commit.py).

The table is the witness: jobs of one group are completed by one statement at
its commit (one "completedAt"); a failing job's writes are rolled back to its
savepoint while the others of its group commit; a crash loses only the
uncommitted outcomes, and those jobs run again, each with one committed run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.pool.conftest import Jobs, Pool, wait_for

HANDLERS = "tests.pool.sample_handlers,tests.pool.group_handlers"


def _enqueue_all(jobs: Jobs, specs: list[tuple[dict[str, object], int]],
                 max_attempts: int = 3) -> list[str]:
    """Enqueue in one transaction, so that one claim can take them all."""
    from skiplock.queue_core import enqueue_many

    with jobs.engine.begin() as conn:
        return enqueue_many([{"type": "TEST_GROUP", "payload": payload, "priority": priority,
                              "max_attempts": max_attempts}
                             for payload, priority in specs], conn=conn)


def _completion_statements(jobs: Jobs, ids: list[str]) -> int:
    """Completions of one statement share its "completedAt" (statement_timestamp())."""
    with jobs.engine.connect() as conn:
        return int(conn.execute(text(
            'SELECT count(DISTINCT "completedAt") FROM "WorkerJob" WHERE id = ANY(:ids)'),
            {"ids": ids}).scalar_one())


def test_failing_jobs_roll_back_to_their_savepoint_and_the_rest_commit_together(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    start_pool("--concurrency", "1", "--batch-size", "20", "--commit-delay-ms", "5000",
               handlers=HANDLERS)
    _enqueue_all(jobs, [({}, 1)])  # a full claim of one: the next claim takes 20
    wait_for(lambda: jobs.all_done(1), 15, "the first job")
    specs = [({"fail": True} if i % 3 == 1 else {"raise": True} if i % 3 == 2 else {}, 0)
             for i in range(15)]
    ids = _enqueue_all(jobs, specs, max_attempts=1)
    wait_for(lambda: sum(jobs.statuses().values()) == 16 and not jobs.statuses().get("PENDING")
             and not jobs.statuses().get("PROCESSING"), 20, "15 jobs settled")
    runs = jobs.runs()
    for job_id, (payload, _) in zip(ids, specs, strict=True):
        row = jobs.get(job_id)
        if payload:
            # Failed in the group's transaction; its own write rolled back with its savepoint.
            assert runs[job_id] == 0
            assert row["status"] == "DEAD_LETTER", row["status"]
            assert row["lastError"]
        else:
            assert runs[job_id] == 1 and row["status"] == "COMPLETED"
    # The five completed jobs of the batch were completed together, not one by one.
    completed = [job_id for job_id, (payload, _) in zip(ids, specs, strict=True) if not payload]
    assert _completion_statements(jobs, completed) < len(completed)


def _start_grouping_pool(start_pool: Callable[..., Pool], jobs: Jobs) -> None:
    """One child whose groups never commit by time, only when their batch of 10 ends."""
    start_pool("--concurrency", "1", "--batch-size", "10", "--commit-delay-ms", "60000",
               handlers=HANDLERS)
    _enqueue_all(jobs, [({}, 9)])  # learns that TEST_GROUP is short; the next claim takes 10
    wait_for(lambda: jobs.all_done(1), 15, "the first job")


def test_a_crash_loses_only_uncommitted_completions_and_they_run_again(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    _start_grouping_pool(start_pool, jobs)
    ids = _enqueue_all(jobs, [({}, 1)] * 5 + [({"crash_first": True}, 0)])
    # The crashed job's retry and the mates' reruns at once: what reran, not when.
    wait_for(lambda: jobs.all_done_hurried(7), 30, "every job completed after the crash",
             interval=0.3)
    runs = jobs.runs()
    assert all(runs[job_id] == 1 for job_id in ids), runs
    # Those that finished before the crash in its group, uncommitted, started again
    # (the first of the five may have been claimed, run and committed on its own).
    starts = [len(jobs.starts(job_id)) for job_id in ids[:5]]
    assert starts[1:] == [2, 2, 2, 2], starts
    assert jobs.get(ids[5])["attempts"] == 2  # the crash was an attempt
    # The others' attempts were given back: each completed at its first counted attempt.
    assert all(jobs.get(job_id)["attempts"] == 1 for job_id in ids[:5])


def test_a_group_whose_connection_dies_interrupts_its_jobs_without_charging_them(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    _start_grouping_pool(start_pool, jobs)
    ids = _enqueue_all(jobs, [({}, 1)] * 4 + [({"terminate_first": True}, 0)],
                       max_attempts=1)
    wait_for(lambda: jobs.all_done_hurried(6), 30, "every job completed after the lost connection",
             interval=0.3)
    runs = jobs.runs()
    assert all(runs[job_id] == 1 for job_id in ids), runs
    # A lost connection is an interruption (queue_core/accounting.py), of the job
    # under which it died and of those that waited in its group: free, so even
    # with max_attempts 1 none is dead-lettered; each counts one interruption.
    for job_id in ids:
        row = jobs.get(job_id)
        assert (row["status"], row["attempts"]) == ("COMPLETED", 1), dict(row)
    starts = [len(jobs.starts(job_id)) for job_id in ids]
    assert starts[-1] == 2, starts
    interrupted = [job_id for job_id in ids if jobs.get(job_id)["interruptions"]]
    assert ids[-1] in interrupted
    # Those that ran before it in its group (not committed on their own) ran again.
    assert all(starts[ids.index(job_id)] == 2 for job_id in interrupted), starts
    assert len(interrupted) >= 2, starts


def _enqueue_quiet(jobs: Jobs, payloads: list[dict[str, object]], priority: int = 0) -> list[str]:
    from skiplock.queue_core import enqueue_many

    with jobs.engine.begin() as conn:
        return enqueue_many([{"type": "TEST_QUIET", "payload": payload, "priority": priority}
                             for payload in payloads], conn=conn)


def _quiet_pool(start_pool: Callable[..., Pool], jobs: Jobs) -> None:
    start_pool("--concurrency", "1", "--batch-size", "5", "--commit-delay-ms", "60000",
               handlers=HANDLERS)
    _enqueue_quiet(jobs, [{}], priority=9)  # a full claim of one: the next claims take 5
    wait_for(lambda: jobs.all_done(1), 15, "the first job")


def test_a_group_that_writes_nothing_completes_and_claims_in_one_statement(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    _quiet_pool(start_pool, jobs)
    ids = _enqueue_quiet(jobs, [{}] * 10)
    wait_for(lambda: jobs.all_done(11), 20, "ten quiet jobs")
    groups: dict[object, list[Any]] = {}
    for row in (jobs.get(job_id) for job_id in ids):
        groups.setdefault(row["completedAt"], []).append(row)
    # The idle child claims one job, then batches of five: at most five completions
    # per statement, and the statements that completed jobs also claimed the next
    # ones (one statement_timestamp()). (Once the queue looks deep, the statement is
    # sent ahead of its batch's last job, pool/ahead.py, which completes later.)
    ordered = [groups[at] for at in sorted(groups)]
    assert max(len(group) for group in ordered) == 5, [len(g) for g in ordered]
    claimed: dict[object, int] = {}
    for row in (jobs.get(job_id) for job_id in ids):
        claimed[row["startedAt"]] = claimed.get(row["startedAt"], 0) + 1
    assert sum(claimed.get(at, 0) for at in groups) == len(ids) - 1, \
        ([len(g) for g in ordered], sorted(claimed.values()))
    assert all(len(jobs.starts(job_id)) == 1 for job_id in ids)


def test_a_lost_job_of_a_group_that_writes_nothing_costs_only_itself(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    _quiet_pool(start_pool, jobs)
    ids = _enqueue_quiet(jobs, [{}] * 5)
    # Not yet claimed: set the thief on the fourth job now that the ids are known.
    with jobs.engine.begin() as conn:
        conn.execute(text("""UPDATE "WorkerJob" SET payload = CAST(:p AS jsonb) WHERE id = :j"""),
                     {"p": f'{{"steal": "{ids[1]}"}}', "j": ids[3]})
    wait_for(lambda: all(jobs.get(j)["status"] == "COMPLETED" for j in ids if j != ids[1]),
             20, "the four jobs that were not stolen")
    # Its completion found the job held elsewhere: discarded, the row left to its holder.
    stolen = jobs.get(ids[1])
    assert (stolen["status"], stolen["lockedBy"]) == ("PROCESSING", "elsewhere"), dict(stolen)
    # Nothing of the others ran twice: no other job's writes were mixed with it.
    assert all(len(jobs.starts(job_id)) == 1 for job_id in ids)


def test_a_type_that_never_used_its_transaction_takes_no_connection_per_batch(
    start_pool: Callable[..., Pool], jobs: Jobs, tmp_path: Path
) -> None:
    # The job's transaction is opened before the handler runs, so that an
    # unreachable database costs the job nothing; but not for a type whose last job
    # never used it (pool/child.py `execute`): such groups check no connection out
    # of the engine's pool at each batch. A job of that type that then writes still
    # gets its transaction, and its writes commit with its completion.
    from skiplock.queue_core import enqueue_many

    start_pool("--concurrency", "1", "--batch-size", "2", handlers=HANDLERS)
    counts = tmp_path / "checkouts"
    quiet = [{"file": str(counts)}] * 20
    writing = [{"file": str(counts), "write": True}] * 10
    with jobs.engine.begin() as conn:  # the quiet ones first: a higher priority
        ids = enqueue_many([{"type": "TEST_CHECKOUTS", "payload": p, "priority": 1}
                            for p in quiet]
                           + [{"type": "TEST_CHECKOUTS", "payload": p, "priority": 0}
                              for p in writing], conn=conn)
    wait_for(lambda: jobs.all_done(30), 30, "thirty jobs")
    seen = [(line.split()[0], int(line.split()[1])) for line in counts.read_text().split("\n")
            if line]
    # One child, the quiet jobs first (the claim's order).
    assert sorted(job_id for job_id, _ in seen[:20]) == sorted(ids[:20]), seen
    taken = [count for _, count in seen]
    # Batches of two: ten batches of quiet jobs after the first, which took none of
    # the group's (only the claims that did not go ahead took one each).
    assert taken[19] - taken[1] <= 3, taken
    # The writing jobs open their transaction: the first when it asks for it, the
    # later ones up front, a connection per batch (a group commits and gives it back).
    assert taken[29] - taken[20] >= 4, taken
    assert sorted(jobs.runs()) == sorted(ids[20:]) and all(n == 1 for n in jobs.runs().values())
