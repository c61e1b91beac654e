"""Two pools (two hosts) boot at once and write their handlers' policies; an operator's policy
survives them; rows written in plain SQL run within the stored limit across both pools."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text

from skiplock.queue_core.features import type_policies
from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(120)


def test_two_pools_boot_their_policies_and_plain_sql_rows_keep_the_limit_across_both(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    type_policies.set_type_policy("TEST_SNOOZE", {"maxAttempts": 9}, "ops")
    pools = [start_pool("--concurrency", "3", handlers=FEATURE_HANDLERS) for _ in range(2)]
    for pool in pools:
        pool.wait_log("this pool serves")
    wait_for(lambda: any(p.type == "TEST_PER_USER" for p in type_policies.type_policies()),
             15, "the pools to write their policies")
    stored = {p.type: (p.source, p.values) for p in type_policies.type_policies()}
    assert stored["TEST_PER_USER"] == ("boot", {"concurrencyLimit": 2,
                                                "concurrencyKeyField": "user"})
    assert stored["TEST_SNOOZE"] == ("operator", {"maxAttempts": 9})  # both boots left it
    jobs.execute("""INSERT INTO "WorkerJob" (type, payload)
                    SELECT 'TEST_PER_USER', jsonb_build_object('user', 'u1', 'seconds', 0.2)
                    FROM generate_series(1, 8)""")
    wait_for(lambda: jobs.all_done(8, "TEST_PER_USER"), 60, "the rows to run")
    with jobs.engine.connect() as conn:
        # No three runs of the user ever overlapped (six children on two hosts could):
        # three intervals that overlap pairwise share a moment, so each pair is checked.
        overlaps = conn.execute(text(
            """SELECT count(*) FROM pool_test_runs a JOIN pool_test_runs b
               ON a.job_id < b.job_id AND a.started < b.finished AND b.started < a.finished
               JOIN pool_test_runs c ON b.job_id < c.job_id
                    AND a.started < c.finished AND c.started < a.finished
                    AND b.started < c.finished AND c.started < b.finished""")).scalar_one()
        pids = conn.execute(text("SELECT count(DISTINCT pid) FROM pool_test_runs")).scalar_one()
    assert (overlaps, len(jobs.runs())) == (0, 8)
    assert pids >= 2
    for pool in pools:
        pool.send(15)
        pool.wait_exit(20)
