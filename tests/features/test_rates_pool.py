"""Rate limits under two real pools (two hosts): no window of a key ever sees more starts
than its rate, and another key's jobs do not wait for it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(120)


def test_two_pools_never_start_more_than_the_rate_in_any_window(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    import tests.features.handlers  # noqa: F401  (registers TEST_RATED's rate here too)

    busy = [jobs.enqueue("TEST_RATED", {"api": "a", "n": i}) for i in range(12)]
    calm = [jobs.enqueue("TEST_RATED", {"api": "b", "n": i}) for i in range(3)]
    pools = [start_pool("--concurrency", "3", handlers=FEATURE_HANDLERS) for _ in range(2)]
    wait_for(lambda: jobs.all_done(15, "TEST_RATED"), 60, "every rated job to complete")
    with jobs.engine.connect() as conn:
        started = {r.id: r.startedAt for r in conn.execute(text(
            'SELECT id, "startedAt" FROM "WorkerJob" WHERE type = \'TEST_RATED\''))}
    a = sorted(started[i] for i in busy)
    # Five starts in a window of two seconds would put the fifth less than 2 s after the
    # first of them: every four consecutive gaps add up to at least 2 s.
    gaps = [later - earlier for earlier, later in zip(a, a[4:], strict=False)]
    assert len(gaps) == 8 and min(gaps) >= timedelta(seconds=2), gaps
    # Key b has its own window: its three jobs start before a's backlog is through.
    assert max(started[i] for i in calm) < a[4]
    for pool in pools:
        pool.send(15)
        pool.wait_exit(20)
