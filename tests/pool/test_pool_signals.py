"""The pool's life under signals: TERM/INT drain, QUIT, HUP, TTIN/TTOU."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from tests.pool.conftest import Jobs, Pool, alive, wait_for

pytestmark = pytest.mark.timeout(60)


def test_jobs_flow_through_the_pool_and_each_runs_once(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "2")
    ids = [jobs.enqueue("TEST_RECORD", {}) for _ in range(20)]
    wait_for(lambda: jobs.all_done(20), 20, "20 jobs completed")
    assert jobs.runs() == {job_id: 1 for job_id in ids}
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(10) == 0
    log = pool.log()
    assert "starting: database=" in log and "concurrency=2" in log
    assert f"job TEST_RECORD {ids[0]} started (attempt 1/3)" in log
    assert f"job TEST_RECORD {ids[0]} completed in" in log


def test_a_notification_wakes_an_idle_child_before_its_next_poll(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--poll-min", "5", "--poll-max", "5")
    pool.wait_log("worker=")  # the start line; the child polls once, then waits 5 s
    time.sleep(1.0)  # let the child finish its first (empty) poll and go to sleep
    job_id = jobs.enqueue("TEST_RECORD", {})
    wait_for(lambda: jobs.all_done(1), 2.5, "the job, well before the 5 s poll")
    assert jobs.runs() == {job_id: 1}


def test_flags_win_over_the_environment_json_logs_carry_the_job_fields_and_no_password(
    start_pool: Callable[..., Pool], jobs: Jobs, database_url: str
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.password is None:  # trust authentication ignores it; the log must not show it
        url = url.set(password="not-to-be-logged")
    pool = start_pool("--concurrency", "1", "--database-url",
                      url.render_as_string(hide_password=False), "--log-format", "json",
                      env={"DATABASE_URL": "", "SKIPLOCK_CONCURRENCY": "5"})
    pool.wait_children(1)
    job_id = jobs.enqueue("TEST_RECORD", {})
    wait_for(lambda: jobs.all_done(1), 10, "the job, on the database named by the flag")
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(10) == 0
    lines = [json.loads(line) for line in pool.log().splitlines()]
    assert "concurrency=1" in lines[0]["msg"] and ":***@" in lines[0]["msg"]
    assert str(url.password) not in pool.log()
    finished = next(e for e in lines if e.get("outcome") == "completed")
    assert finished["job_id"] == job_id and finished["job_type"] == "TEST_RECORD"
    assert finished["attempt"] == 1 and finished["duration_ms"] >= 0
    assert finished["worker"].split(":")[1].isdigit()


def test_children_claim_batches_from_a_deep_queue_and_run_each_job_once(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    start_pool("--concurrency", "2", "--batch-size", "5")
    ids = [jobs.enqueue("TEST_RECORD", {}) for _ in range(40)]
    wait_for(lambda: jobs.all_done(40), 20, "40 jobs completed")
    assert jobs.runs() == {job_id: 1 for job_id in ids}


def test_a_draining_child_gives_back_the_jobs_of_its_batch_it_did_not_start(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--batch-size", "4")
    jobs.enqueue("TEST_RECORD", {})  # a full claim of one: the next claim takes a batch
    wait_for(lambda: jobs.all_done(1), 10, "the first job")
    ids = [jobs.enqueue("TEST_SLEEP", {"seconds": 0.5}) for _ in range(8)]
    wait_for(lambda: jobs.statuses().get("PROCESSING", 0) >= 2, 10, "a batch claimed")
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(15) == 0
    rows = [jobs.get(job_id) for job_id in ids]
    assert {row["status"] for row in rows} <= {"COMPLETED", "PENDING"}
    assert all(row["attempts"] == 0 for row in rows if row["status"] == "PENDING")
    assert any(row["status"] == "PENDING" for row in rows)


def test_polling_alone_serves_jobs_with_no_listen(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    start_pool("--concurrency", "1", "--no-listen")
    ids = [jobs.enqueue("TEST_RECORD", {}) for _ in range(3)]
    wait_for(lambda: jobs.all_done(3), 15, "3 jobs completed by polling")
    assert jobs.runs() == {job_id: 1 for job_id in ids}


def test_sigterm_lets_the_running_job_finish_claims_nothing_new_and_exits_0(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "2", "--graceful-timeout", "20")
    running = jobs.enqueue("TEST_SLEEP", {"seconds": 2})
    wait_for(lambda: jobs.starts(running), 10, "the slow job to start")
    began = time.monotonic()
    pool.send(signal.SIGTERM)
    pool.wait_log("draining (SIGTERM)")
    later = [jobs.enqueue("TEST_RECORD", {}) for _ in range(3)]
    assert pool.wait_exit(15) == 0
    assert time.monotonic() - began < 10
    assert jobs.get(running)["status"] == "COMPLETED"
    for job_id in later:
        row = jobs.get(job_id)
        assert (row["status"], row["attempts"]) == ("PENDING", 0)


def test_sigterm_past_the_graceful_timeout_releases_the_job_without_charging_an_attempt(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--graceful-timeout", "1")
    job_id = jobs.enqueue("TEST_SLEEP", {"seconds": 60})
    wait_for(lambda: jobs.starts(job_id), 10, "the job to start")
    child = pool.children()[0]
    began = time.monotonic()
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(10) == 0
    assert time.monotonic() - began < 6
    assert not alive(child)
    row = jobs.get(job_id)
    assert (row["status"], row["attempts"], row["lockedBy"]) == ("PENDING", 0, None)
    assert "stopped by the pool (shutdown" in row["lastError"]
    assert "interruption 1 of 3 free: attempt 1 not counted" in row["lastError"]


def test_sigquit_stops_at_once_and_releases_the_running_job(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--graceful-timeout", "30")
    job_id = jobs.enqueue("TEST_SLEEP", {"seconds": 60})
    wait_for(lambda: jobs.starts(job_id), 10, "the job to start")
    began = time.monotonic()
    pool.send(signal.SIGQUIT)
    assert pool.wait_exit(10) == 0
    assert time.monotonic() - began < 5
    row = jobs.get(job_id)
    assert (row["status"], row["attempts"]) == ("PENDING", 0)


def test_a_second_sigint_stops_waiting_for_the_running_job(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--graceful-timeout", "30")
    job_id = jobs.enqueue("TEST_SLEEP", {"seconds": 60})
    wait_for(lambda: jobs.starts(job_id), 10, "the job to start")
    pool.send(signal.SIGINT)  # Ctrl-C: drain, the job may take its 30 s
    pool.wait_log("draining (SIGINT)")
    began = time.monotonic()
    pool.send(signal.SIGINT)  # Ctrl-C again: enough
    assert pool.wait_exit(10) == 0
    assert time.monotonic() - began < 5
    row = jobs.get(job_id)
    assert (row["status"], row["attempts"]) == ("PENDING", 0)


def test_hup_replaces_every_child_and_loses_no_job(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "2")
    old = set(pool.wait_children(2))
    running = jobs.enqueue("TEST_SLEEP", {"seconds": 1.5})
    wait_for(lambda: jobs.starts(running), 10, "the slow job to start")
    pool.send(signal.SIGHUP)
    wait_for(lambda: len(c := set(pool.children())) == 2 and not c & old, 15,
             "two new children and none of the old")
    assert jobs.get(running)["status"] == "COMPLETED"
    assert jobs.get(running)["attempts"] == 1
    ids = [jobs.enqueue("TEST_RECORD", {}) for _ in range(4)]
    wait_for(lambda: all(jobs.get(i)["status"] == "COMPLETED" for i in ids), 15,
             "jobs served by the new children")
    assert set(row["pid"] for row in jobs.run_rows() if row["job_id"] in ids) <= set(
        pool.children())


def test_ttin_and_ttou_add_and_remove_one_child(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1")
    pool.wait_children(1)
    pool.send(signal.SIGTTIN)
    pool.wait_children(2)
    pool.send(signal.SIGTTIN)
    pool.wait_children(3)
    pool.send(signal.SIGTTOU)
    pool.wait_children(2)
    for _ in range(3):  # never below one
        pool.send(signal.SIGTTOU)
    pool.wait_log("concurrency lowered to 1")
    pool.wait_children(1)
    job_id = jobs.enqueue("TEST_RECORD", {})
    wait_for(lambda: jobs.all_done(1), 10, "a job served by the last child")
    assert jobs.runs() == {job_id: 1}
