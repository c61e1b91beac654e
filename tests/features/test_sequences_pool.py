"""Sequences under two real pools (two hosts): the jobs of each key run one at a time in
enqueue order, across failures retried with a back-off and a child killed mid-job."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy import text

from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(120)


def test_two_pools_run_each_key_one_job_at_a_time_in_enqueue_order(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    rand = random.Random(30)
    keys = ["acct:1", "acct:2", "acct:3"]
    line: dict[str, list[str]] = {k: [] for k in keys}
    for i in range(6):
        for k in keys:
            payload = {"i": i, "seconds": rand.uniform(0, 0.05),
                       "fail_first": i == 3, "die_first": i == 5 and k == "acct:2"}
            line[k].append(jobs.enqueue("TEST_SEQUENCED", payload, sequence=k))
    for _ in range(2):
        start_pool("--concurrency", "3", handlers=FEATURE_HANDLERS)
    wait_for(lambda: jobs.statuses("TEST_SEQUENCED")["COMPLETED"] >= 17, 90,
             "every job but the one killed to complete")
    # That one is the last of its key: the crash's back-off (seconds) holds no job
    # behind it, so it is made due at once.
    wait_for(lambda: jobs.all_done_hurried(18, "TEST_SEQUENCED"), 30, "every job to complete",
             interval=0.3)

    with jobs.engine.connect() as conn:
        first_start = dict(conn.execute(text(
            "SELECT job_id, min(at) FROM pool_test_starts GROUP BY job_id")).all())
        last_start = dict(conn.execute(text(
            "SELECT job_id, max(at) FROM pool_test_starts GROUP BY job_id")).all())
        finished = dict(conn.execute(text("SELECT job_id, finished FROM pool_test_runs")).all())
    assert len(finished) == 18
    for k, ids in line.items():
        for before, after in zip(ids, ids[1:], strict=False):
            # Every start of a job, retries included, came after its predecessor completed:
            # never two of a key at once, never out of order.
            assert last_start[before] <= finished[before] <= first_start[after], (k, before)
    assert len(jobs.starts(line["acct:2"][5])) == 2  # killed once, then run again
    assert all(len(jobs.starts(ids[3])) == 2 for ids in line.values())  # failed once
