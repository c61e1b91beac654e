"""Checkpoints in real pools: a long job stopped by a deploy resumes from where it got
to, free of charge, and a failed run's checkpoint reaches its retry."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from tests.features.checkpoint_handlers import TABLE
from tests.pool.conftest import Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(120)

HANDLERS = "tests.features.checkpoint_handlers"


@pytest.fixture
def steps(jobs: Jobs) -> Jobs:
    jobs.execute(TABLE)
    jobs.execute("TRUNCATE checkpoint_steps")
    return jobs


def marks(jobs: Jobs, job_id: str) -> list[Any]:
    """Every step the job's runs began, in order: (pid, step, resumed)."""
    with jobs.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT pid, step, resumed FROM checkpoint_steps WHERE job_id = :j ORDER BY at"),
            {"j": job_id}))


def last_step(jobs: Jobs, job_id: str) -> int:
    found = marks(jobs, job_id)
    return found[-1].step if found else -1


def test_a_long_job_stopped_by_a_deploy_at_90_percent_resumes_near_90_and_pays_nothing(
    start_pool: Callable[..., Pool], steps: Jobs,
) -> None:
    # 100 steps, a checkpoint after each; a TERM at step 90 whose grace is too short
    # for the last 10: the job is cut short, not completed. The steps are of 0.1 s
    # from step 85 on, for the checkpoint's throttle below; quick before.
    pool = start_pool("--concurrency", "1", "--graceful-timeout", "0.3", handlers=HANDLERS)
    job_id = steps.enqueue("TEST_LONG_STEPS", {"steps": 100, "step_s": 0.1,
                                               "quick_steps": 85, "quick_s": 0.01})
    wait_for(lambda: last_step(steps, job_id) >= 90, 60, "the handler to reach step 90")
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(30) == 0
    first = marks(steps, job_id)
    reached = first[-1].step  # the step it was in when it was killed
    assert reached < 99 and [m.step for m in first] == list(range(reached + 1))
    r = steps.get(job_id)
    assert (r["status"], r["attempts"], r["interruptions"]) == ("PENDING", 0, 1)
    resume_at = r["checkpoint"]["next"]
    # What it reported last (throttled to four a second) and the master heard before
    # the SIGKILL: a step or three behind at most.
    assert reached - 4 <= resume_at <= reached + 1 and resume_at >= 87

    steps.hurry()  # the interruption's back-off: not what this test is about
    start_pool("--concurrency", "1", handlers=HANDLERS)
    wait_for(lambda: steps.get(job_id)["status"] == "COMPLETED", 60, "the job to complete")
    second = marks(steps, job_id)[len(first):]
    assert second[0].resumed == {"resumed": {"next": resume_at}}
    assert [m.step for m in second] == list(range(resume_at, 100))
    assert second[0].pid != first[0].pid
    r = steps.get(job_id)
    assert (r["attempts"], r["interruptions"], r["checkpoint"]) == (1, 1, None)
    assert r["result"] == {"resumed_from": resume_at}


def test_a_failed_runs_checkpoint_reaches_its_retry(
    start_pool: Callable[..., Pool], steps: Jobs,
) -> None:
    start_pool("--concurrency", "1", handlers=HANDLERS)
    job_id = steps.enqueue("TEST_FAIL_AFTER_CHECKPOINT", {"runs": 3})
    wait_for(lambda: steps.get(job_id)["status"] == "COMPLETED", 60, "the job to complete")
    assert [m.resumed for m in marks(steps, job_id)] == [
        {"resumed": None}, {"resumed": {"done": 1}}, {"resumed": {"done": 2}}]
    r = steps.get(job_id)
    assert (r["attempts"], r["checkpoint"], r["result"]) == (3, None, {"done": 3})
    assert "run 2 fails after its checkpoint" in r["lastError"]


def test_a_job_abandoned_on_quit_keeps_the_checkpoint_its_child_had_not_sent_yet(
    start_pool: Callable[..., Pool], steps: Jobs,
) -> None:
    pool = start_pool("--concurrency", "1", handlers=HANDLERS)
    job_id = steps.enqueue("TEST_CHECKPOINT_THEN_WAIT", {})
    wait_for(lambda: last_step(steps, job_id) == 1000, 30, "the checkpoints to be taken")
    pool.send(signal.SIGQUIT)
    assert pool.wait_exit(30) == 0
    r = steps.get(job_id)
    assert (r["status"], r["attempts"], r["interruptions"]) == ("PENDING", 0, 1)
    assert json.dumps(r["checkpoint"]) == "999"
