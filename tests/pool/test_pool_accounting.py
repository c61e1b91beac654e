"""Every job ends, and no job pays for another's fault (queue_core/accounting.py).

Real pools, real faults: handlers that end their own session or let it time
out, that fail on a database of their own, jobs that hang through restarts,
and a child that dies holding a claim its master never heard of.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from skiplock.queue_core.accounting import FREE_INTERRUPTIONS, max_runs
from tests.pool.conftest import SAMPLE_HANDLERS, Jobs, Pool, alive, wait_for
from tests.support import free_port

pytestmark = pytest.mark.timeout(120)

HANDLERS = f"{SAMPLE_HANDLERS},tests.pool.hostile_handlers"


def _backed_off(jobs: Jobs, job_id: str) -> bool:
    with jobs.engine.connect() as conn:
        from sqlalchemy import text

        return bool(conn.execute(text('SELECT "availableAt" > now() + interval \'0.5 second\' '
                                      'FROM "WorkerJob" WHERE id = :id'), {"id": job_id}).scalar())


@pytest.mark.parametrize("job_type", ["TEST_KILL_OWN_SESSION", "TEST_IDLE_TIMEOUT",
                                      "TEST_SKIPLOCK_CALL_LOSES_CONNECTION"])
def test_a_job_that_breaks_its_own_connection_backs_off_and_ends_after_max_attempts_plus_3(
    start_pool: Callable[..., Pool], jobs: Jobs, job_type: str
) -> None:
    start_pool("--concurrency", "1", handlers=HANDLERS)
    job_id = jobs.enqueue(job_type, {}, max_attempts=1)
    for n in range(1, FREE_INTERRUPTIONS + 1):
        wait_for(lambda n=n: jobs.get(job_id)["interruptions"] == n, 15, f"interruption {n}")
        row = jobs.get(job_id)
        assert (row["status"], row["attempts"]) == ("PENDING", 0)
        assert "connection" in row["lastError"] and " was lost " in row["lastError"]
        assert f"interruption {n} of 3 free: attempt 1 not counted" in row["lastError"]
        assert _backed_off(jobs, job_id), "a free interruption must wait before the next run"
        assert len(jobs.starts(job_id)) == n
        jobs.hurry()
    wait_for(lambda: jobs.get(job_id)["status"] == "DEAD_LETTER", 15, "the job dead-lettered")
    row = jobs.get(job_id)
    assert row["attempts"] == 1 and len(jobs.starts(job_id)) == max_runs(1)
    assert "free interruptions are used up: attempt 1/1 counted; no attempts left" in \
        row["lastError"]


def test_a_handlers_error_on_another_database_is_the_handlers_own(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", handlers=HANDLERS)
    url = f"postgresql+psycopg2://nobody:secret@127.0.0.1:{free_port()}/elsewhere"
    job_id = jobs.enqueue("TEST_OTHER_DATABASE", {"url": url}, max_attempts=2)
    wait_for(lambda: jobs.get(job_id)["attempts"] == 1
             and jobs.get(job_id)["status"] == "PENDING", 15, "the failed attempt")
    row = jobs.get(job_id)
    assert row["lastError"].startswith("OperationalError: ")
    assert "cannot use the database" not in row["lastError"] and not row["interruptions"]
    assert _backed_off(jobs, job_id)
    assert len(jobs.starts(job_id)) == 1
    log = pool.log()
    assert "raised OperationalError" in log
    assert "database unavailable" not in log and "interrupted" not in log


def test_a_hung_job_interrupted_by_every_restart_ends_dead_lettered(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    job_id = jobs.enqueue("TEST_SLEEP", {"seconds": 600}, max_attempts=1)
    for n in range(1, FREE_INTERRUPTIONS + 2):
        pool = start_pool("--concurrency", "1", "--graceful-timeout", "0.5")
        wait_for(lambda n=n: len(jobs.starts(job_id)) == n, 15, f"run {n} to start")
        pool.send(signal.SIGTERM)
        assert pool.wait_exit(10) == 0
        pool.kill()
        jobs.hurry()
    row = jobs.get(job_id)
    assert (row["status"], row["attempts"], row["interruptions"]) == ("DEAD_LETTER", 1, 3)
    assert "was stopped by the pool" in row["lastError"]
    assert "no attempts left" in row["lastError"]


def test_a_claim_the_master_never_heard_of_is_given_back_uncharged_when_the_child_dies(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # Stuck recovery (which would count an interruption) stays out of the way.
    pool = start_pool("--concurrency", "1", "--stuck-timeout", "60")
    running = jobs.enqueue("TEST_SLEEP", {"seconds": 600}, max_attempts=3)
    wait_for(lambda: jobs.starts(running), 10, "the job to start")
    worker = jobs.get(running)["lockedBy"]
    victim = int(worker.split(":")[-2])
    # What the child leaves when it dies between its claim's commit and its report
    # of the claim to the master: a row held by it that only the database knows.
    unreported = jobs.enqueue("TEST_RECORD", {}, max_attempts=1)
    jobs.execute("""UPDATE "WorkerJob" SET status = 'PROCESSING', attempts = attempts + 1,
                    "lockedBy" = :w, "lockedAt" = now(), "startedAt" = now() WHERE id = :id""",
                 w=worker, id=unreported)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not alive(victim), 5, "the child to die")
    # Given back by the master, then run by the next child: one run, one attempt.
    wait_for(lambda: jobs.get(unreported)["status"] == "COMPLETED", 15, "it runs, once")
    row = jobs.get(unreported)
    assert (row["attempts"], row["interruptions"]) == (1, None)
    assert "before it started the job" in row["lastError"]
    assert jobs.runs() == {unreported: 1}
    assert jobs.get(running)["attempts"] == 1  # the crash of the running job counts
    assert pool.proc.poll() is None


def test_a_job_never_runs_unbounded_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from skiplock.queue_core.config import load_settings

    monkeypatch.delenv("SKIPLOCK_JOB_TIMEOUT_S", raising=False)
    assert load_settings().job_timeout_s == 3600
    monkeypatch.setenv("SKIPLOCK_JOB_TIMEOUT_S", "0")  # the operator's explicit choice
    assert load_settings().job_timeout_s is None
