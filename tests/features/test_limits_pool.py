"""Fair claims under a real pool: one user's 100,000-job backfill does not starve another
user's single job, and the backfill never runs more than its limit at once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from skiplock.cli import main
from skiplock.queue_core import config, enqueue_many
from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(120)

BACKFILL = 100_000


def test_a_single_job_starts_within_seconds_behind_another_users_backfill(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    import tests.features.handlers  # noqa: F401  (registers TEST_PER_USER's limit here too)

    for start in range(0, BACKFILL, 20_000):
        enqueue_many({"type": "TEST_PER_USER", "payload": {"user": "big", "seconds": 0.05,
                                                           "n": i}}
                     for i in range(start, start + 20_000))
    config.clear_cache()
    stats = CliRunner().invoke(main, ["stats"], catch_exceptions=False)
    assert f"held back by a concurrency limit: {BACKFILL - 2} pending" in stats.output
    assert "TEST_PER_USER:big" in stats.output

    pool = start_pool("--concurrency", "3", handlers=FEATURE_HANDLERS)
    wait_for(lambda: len(jobs.run_rows()) >= 4, 30, "the backfill to be under way")
    [small] = enqueue_many([{"type": "TEST_PER_USER", "payload": {"user": "small"}}])
    enqueued = time.monotonic()
    wait_for(lambda: jobs.starts(small), 10, "the small user's job to start")
    waited = time.monotonic() - enqueued
    assert waited < 5, f"the small user's job waited {waited:.1f}s"
    with jobs.engine.connect() as conn:
        # No three runs of the big user ever overlapped (three children could run them).
        overlaps = conn.execute(text(
            """SELECT count(*) FROM pool_test_runs a JOIN pool_test_runs b
               ON a.job_id < b.job_id AND a.started < b.finished AND b.started < a.finished
               JOIN pool_test_runs c ON b.job_id < c.job_id AND c.started < a.finished
                    AND a.started < c.finished AND c.started < b.finished
                    AND b.started < c.finished
               WHERE a.job_id <> :s AND b.job_id <> :s AND c.job_id <> :s"""),
            {"s": small}).scalar_one()
    assert overlaps == 0
    pool.send(15)
    pool.wait_exit(20)
