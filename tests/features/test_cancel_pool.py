"""Cancelling a job that a real pool runs: the child is stopped within about a heartbeat,
and the job's transaction rolls back with everything the handler wrote."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from skiplock import cancel
from skiplock.queue_core.features.cancel import CancelOutcome
from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, alive, wait_for

pytestmark = pytest.mark.timeout(90)


def test_a_running_job_is_stopped_its_writes_and_next_step_vanish_and_the_pool_goes_on(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "2", "--heartbeat", "0.5", handlers=FEATURE_HANDLERS)
    job_id = jobs.enqueue("TEST_CANCELLABLE", {"seconds": 60})
    wait_for(lambda: jobs.starts(job_id), 15, "the job to start")
    [victim] = jobs.starts(job_id)
    assert alive(victim)
    result = cancel(job_id, by="test-operator")
    assert result.outcome is CancelOutcome.CANCELLING
    wait_for(lambda: jobs.get(job_id)["status"] == "FAILED", 5, "the job to end FAILED")
    wait_for(lambda: not alive(victim), 5, "the child running it to be stopped")
    row = jobs.get(job_id)
    assert re.fullmatch(r"cancelled by test-operator at \S+ while running "
                        rf"\(worker \S+:{victim}:\S+, attempt 1 of 3\)", row["lastError"])
    assert jobs.runs() == {}  # the handler's own write rolled back
    assert jobs.statuses("TEST_NEXT_STEP") == {}  # and so did the next step of its chain
    pool.wait_children(2)  # the slot was refilled
    later = jobs.enqueue("TEST_RECORD", {})
    wait_for(lambda: jobs.get(later)["status"] == "COMPLETED", 10, "a later job")
    assert jobs.get(job_id)["status"] == "FAILED"  # nothing settled it again
    assert "cancelled; stopping worker" in pool.log()
    assert cancel(job_id).outcome is CancelOutcome.FINISHED


def test_a_job_cancelled_as_its_attempt_failed_is_ended_by_the_next_worker_unrun(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    from skiplock import claim, fail

    job_id = jobs.enqueue("TEST_CANCELLABLE", {"seconds": 0})
    [job] = claim("host-that-failed")
    assert cancel(job_id, by="ops").outcome is CancelOutcome.CANCELLING
    assert fail(job, "the attempt failed before its master read the cancel") == "PENDING"
    jobs.hurry()
    start_pool("--concurrency", "1", handlers=FEATURE_HANDLERS)
    wait_for(lambda: jobs.get(job_id)["status"] == "FAILED", 15, "the job to end FAILED")
    assert re.fullmatch(r"cancelled by ops at \S+ before it started \(worker \S+, attempt 2 of 3\)",
                        jobs.get(job_id)["lastError"])
    assert jobs.starts(job_id) == [] and jobs.runs() == {}


def test_a_handler_that_will_not_stop_is_killed_and_its_job_stays_cancelled(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "1", "--heartbeat", "0.3", handlers=FEATURE_HANDLERS)
    job_id = jobs.enqueue("TEST_STUBBORN", {})
    wait_for(lambda: jobs.starts(job_id), 15, "the job to start")
    [victim] = jobs.starts(job_id)
    cancel(job_id, by="ops")
    wait_for(lambda: not alive(victim), 15, "the stubborn child to be killed")
    assert jobs.get(job_id)["status"] == "FAILED"
    pool.wait_children(1)
    log = pool.log()
    assert "cancelled; stopping worker" in log
    assert "no longer held" not in log  # later heartbeats did not take it for a lost job
