"""When things die: children, masters, handlers that overrun, crash or never boot."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable

import pytest

from tests.pool.conftest import Jobs, Pool, alive, wait_for

pytestmark = pytest.mark.timeout(90)


def _pid_of(locked_by: str) -> int:
    return int(locked_by.split(":")[-2])  # host:pid:boot-id


def test_a_child_sigkilled_mid_job_fails_that_attempt_and_the_retry_completes(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "2")
    job_id = jobs.enqueue("TEST_SLEEP", {"first_seconds": 60, "seconds": 0.2})
    wait_for(lambda: jobs.starts(job_id), 10, "the job to start")
    victim = _pid_of(jobs.get(job_id)["lockedBy"])
    assert victim in pool.children()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: jobs.get(job_id)["attempts"] == 1 and jobs.get(job_id)["status"] == "PENDING",
             5, "the master to fail the attempt at once")
    assert jobs.get(job_id)["lastError"] == (
        f"worker pid {victim} killed by SIGKILL (out of memory?) while running (attempt 1/3)")
    jobs.hurry()
    wait_for(lambda: jobs.get(job_id)["status"] == "COMPLETED", 15, "the retry to complete")
    assert jobs.get(job_id)["attempts"] == 2
    assert jobs.runs() == {job_id: 1}
    pool.wait_children(2)  # the slot was refilled
    assert victim not in pool.children()


@pytest.mark.parametrize("code", [17, 3])  # 3: the boot-failure status, from a handler
def test_a_child_that_exits_mid_job_is_settled_with_its_exit_status(
    start_pool: Callable[..., Pool], jobs: Jobs, code: int
) -> None:
    pool = start_pool("--concurrency", "1")
    job_id = jobs.enqueue("TEST_EXIT", {"code": code}, max_attempts=1)
    wait_for(lambda: jobs.get(job_id)["status"] == "DEAD_LETTER", 10, "the job dead-lettered")
    assert re.fullmatch(rf"worker pid \d+ exited with status {code} while running "
                        r"\(attempt 1/1\)", jobs.get(job_id)["lastError"])
    after = jobs.enqueue("TEST_RECORD", {})  # the pool goes on: no halt
    wait_for(lambda: jobs.get(after)["status"] == "COMPLETED", 10, "a later job")
    assert pool.proc.poll() is None


def test_a_killed_master_takes_its_children_along_and_the_next_pool_rescues_their_jobs(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    first = start_pool("--concurrency", "2")
    ids = [jobs.enqueue("TEST_SLEEP", {"first_seconds": 60, "seconds": 0.1}) for _ in range(2)]
    wait_for(lambda: all(jobs.starts(i) for i in ids), 10, "both jobs to start")
    children = first.children()
    assert len(children) == 2
    first.send(signal.SIGKILL)
    first.wait_exit(5)
    wait_for(lambda: not any(alive(pid) for pid in children), 5, "the orphaned children to die")
    assert all(jobs.get(i)["status"] == "PROCESSING" for i in ids)  # nobody settled them
    second = start_pool("--concurrency", "2")
    wait_for(lambda: all(jobs.get(i)["status"] == "PENDING" for i in ids) or jobs.all_done(2),
             20, "stuck recovery to rescue the jobs (no heartbeat for 3 s)")
    jobs.hurry()
    wait_for(lambda: jobs.all_done(2), 20, "the rescued jobs to complete")
    assert jobs.runs() == {i: 1 for i in ids}
    # The rescue was a free interruption (the host died, not the job's fault).
    assert all((jobs.get(i)["attempts"], jobs.get(i)["interruptions"]) == (1, 1) for i in ids)
    assert not set(children) & set(second.children())


def test_a_job_over_its_timeout_is_stopped_and_failed_with_a_timeout_error(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "2", "--job-timeout", "1")
    sleeper = jobs.enqueue("TEST_SLEEP", {"seconds": 60}, max_attempts=1)
    spinner = jobs.enqueue("TEST_SPIN", {"seconds": 60}, max_attempts=1)  # holds the GIL
    began = time.monotonic()
    wait_for(lambda: all(jobs.get(i)["status"] == "DEAD_LETTER" for i in (sleeper, spinner)),
             15, "both jobs to be timed out")
    assert time.monotonic() - began < 8
    for job_id in (sleeper, spinner):
        assert re.match(r"timed out after 1s; worker pid \d+ was stopped \(attempt 1/1\)",
                        jobs.get(job_id)["lastError"])
    assert jobs.runs() == {}
    pool.wait_children(2)


def test_a_registration_timeout_overrides_the_pool_default(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    start_pool("--concurrency", "1")  # no --job-timeout: TEST_SLOW_TYPE registers 1 s
    job_id = jobs.enqueue("TEST_SLOW_TYPE", {"seconds": 60}, max_attempts=1)
    wait_for(lambda: jobs.get(job_id)["status"] == "DEAD_LETTER", 15, "the job to time out")
    assert jobs.get(job_id)["lastError"].startswith("timed out after 1s")


def test_a_poison_job_ends_dead_lettered_after_its_attempts_while_others_keep_flowing(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    start_pool("--concurrency", "2")
    poison = jobs.enqueue("TEST_POISON", {}, max_attempts=3)
    others = [jobs.enqueue("TEST_RECORD", {"seconds": 0.05}) for _ in range(30)]

    def settled() -> bool:
        jobs.hurry()  # retries due now: the test is about accounting, not the backoff
        return jobs.get(poison)["status"] == "DEAD_LETTER"

    wait_for(settled, 30, "the poison job to be dead-lettered", interval=0.2)
    row = jobs.get(poison)
    assert row["attempts"] == 3
    assert re.fullmatch(r"worker pid \d+ killed by SIGKILL \(out of memory\?\) while running "
                        r"\(attempt 3/3\)", row["lastError"])
    assert len(set(jobs.starts(poison))) == 3  # three different children died
    wait_for(lambda: jobs.all_done(30, "TEST_RECORD"), 30, "the other jobs to complete")
    assert jobs.runs() == {job_id: 1 for job_id in others}


def test_children_that_crash_in_a_loop_are_respawned_with_a_growing_back_off(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", handlers="tests.pool.crashing_handlers")
    log = pool.wait_log("respawning in", count=4, timeout=20)
    delays = [float(d) for d in re.findall(r"respawning in ([\d.]+)s", log)]
    assert delays[:4] == [0.0, 0.5, 1.0, 2.0]
    assert "exited with status 17" in log
    assert pool.proc.poll() is None  # a crash loop is not a boot failure: the master stays
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(10) == 0


@pytest.mark.parametrize("module, reason", [
    ("tests.pool.broken_handlers", "this handler module is broken on purpose"),
    ("tests.pool.no_such_module", "No module named 'tests.pool.no_such_module'"),
])
def test_a_child_that_cannot_boot_stops_the_master_with_the_reason(
    start_pool: Callable[..., Pool], module: str, reason: str
) -> None:
    pool = start_pool("--concurrency", "2", handlers=module)
    assert pool.wait_exit(15) == 3
    log = pool.log()
    assert "could not boot: cannot import handler module" in log
    assert reason in log
    assert "stopping the pool (exit status 3)" in log
    assert pool.children() == []


def test_a_database_that_refuses_the_worker_is_a_boot_failure(
    start_pool: Callable[..., Pool], database_url: str
) -> None:
    from sqlalchemy.engine import make_url

    missing = make_url(database_url).set(database="skiplock_no_such_database")
    pool = start_pool("--concurrency", "1",
                      url=missing.render_as_string(hide_password=False))
    assert pool.wait_exit(20) == 3
    assert "the database refused the worker" in pool.log()


def test_a_database_without_the_job_table_is_a_boot_failure_that_says_to_migrate(
    start_pool: Callable[..., Pool], database_url: str
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{make_url(database_url).database}_unmigrated"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        pool = start_pool("--concurrency", "2", url=make_url(database_url).set(
            database=name).render_as_string(hide_password=False))
        assert pool.wait_exit(20) == 3
        log = pool.log()
        assert 'relation "WorkerJob" does not exist; run `skiplock migrate` first' in log
        assert "Traceback" not in log
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_job_rescued_elsewhere_has_its_child_killed_and_its_result_discarded(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1")
    job_id = jobs.enqueue("TEST_SLEEP", {"seconds": 60})
    wait_for(lambda: jobs.starts(job_id), 10, "the job to start")
    victim = _pid_of(jobs.get(job_id)["lockedBy"])
    # What a rescue and a new claim by another host look like from here.
    jobs.execute('UPDATE "WorkerJob" SET "lockedBy" = \'elsewhere:1:x\', attempts = attempts + 1 '
                 "WHERE id = :id", id=job_id)
    wait_for(lambda: not alive(victim), 5, "the child running the lost job to be killed")
    pool.wait_log("is no longer held by")
    row = jobs.get(job_id)
    assert (row["status"], row["lockedBy"], row["attempts"]) == ("PROCESSING", "elsewhere:1:x", 2)
    assert jobs.runs() == {}
    pool.wait_children(1)


def test_a_job_that_holds_the_cpu_past_the_stuck_timeout_keeps_its_lease(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # Heartbeat 0.5 s, stuck timeout 3 s, recovery every 3 s: a 5 s job in a
    # pure-Python loop would be rescued if its own process sent the heartbeats.
    start_pool("--concurrency", "1")
    job_id = jobs.enqueue("TEST_SPIN", {"seconds": 5})
    wait_for(lambda: jobs.get(job_id)["status"] == "COMPLETED", 20, "the long job to complete")
    assert jobs.get(job_id)["attempts"] == 1
    assert jobs.runs() == {job_id: 1}


def test_children_are_recycled_after_max_jobs(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--max-jobs-per-child", "2")
    ids = [jobs.enqueue("TEST_RECORD", {}) for _ in range(6)]
    wait_for(lambda: jobs.all_done(6), 20, "6 jobs completed")
    pids = [row["pid"] for row in sorted(jobs.run_rows(), key=lambda r: r["finished"])]
    assert len(set(pids)) == 3 and all(pids.count(p) == 2 for p in set(pids))
    assert jobs.runs() == {i: 1 for i in ids}
    assert "recycled: ran 2 jobs (--max-jobs-per-child 2)" in pool.log()


def test_children_are_recycled_over_max_memory(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--max-memory-per-child", "1")
    ids = [jobs.enqueue("TEST_RECORD", {}) for _ in range(2)]
    wait_for(lambda: jobs.all_done(2), 20, "2 jobs completed")
    assert len({row["pid"] for row in jobs.run_rows()}) == 2
    assert jobs.runs() == {i: 1 for i in ids}
    assert "over --max-memory-per-child 1" in pool.log()


def test_handler_failures_are_retried_or_dead_lettered_as_the_handler_says(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    final = jobs.enqueue("TEST_FAIL", {"error": "bad input", "retry": False})
    raised = jobs.enqueue("TEST_FAIL", {"raise": "boom"})
    invalid = jobs.enqueue("INTERPRET_EVENT", {"eventId": "e1"})
    # A row written by another service, which the pool checks again before running.
    jobs.execute('UPDATE "WorkerJob" SET payload = \'{"eventId": 42}\' WHERE id = :id', id=invalid)
    start_pool("--concurrency", "1")
    wait_for(lambda: jobs.get(final)["status"] == "DEAD_LETTER"
             and jobs.get(raised)["attempts"] == 1 and jobs.get(raised)["status"] == "PENDING"
             and jobs.get(invalid)["status"] == "DEAD_LETTER", 10, "the three jobs settled")
    assert jobs.get(final)["lastError"] == "bad input"
    assert jobs.get(raised)["lastError"] == "ValueError: boom"
    assert "eventId" in jobs.get(invalid)["lastError"]


def test_a_handler_whose_query_always_times_out_uses_up_its_attempts(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # Its error is an OperationalError like a lost connection's, but the server is
    # fine: the attempt counts, or the job would be given back forever.
    start_pool("--concurrency", "1")
    job_id = jobs.enqueue("TEST_DB_TIMEOUT", {}, max_attempts=2)

    def dead() -> bool:
        jobs.hurry()
        return jobs.get(job_id)["status"] == "DEAD_LETTER"

    wait_for(dead, 15, "the job dead-lettered after its 2 attempts", interval=0.2)
    assert jobs.get(job_id)["attempts"] == 2
    assert "statement timeout" in jobs.get(job_id)["lastError"]
