"""Fairness under two real pools (two hosts): keys of weights 1 and 3 share the workers
1:3 over a busy period, and a light key's jobs start within the windows ahead of them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text

from skiplock import enqueue_many, set_weight
from skiplock.queue_core.features.fairness import DEFAULT_WINDOW
from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(120)


def backlog(key: str, n: int) -> None:
    enqueue_many({"type": "TEST_FAIR", "payload": {"seconds": 0.01}, "fair_key": key}
                 for _ in range(n))


def test_weighted_keys_share_the_pools_and_a_light_key_is_not_starved(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    set_weight("b", 3)
    backlog("a", 200)
    backlog("b", 600)
    pools = [start_pool("--concurrency", "2", handlers=FEATURE_HANDLERS) for _ in range(2)]
    wait_for(lambda: jobs.statuses("TEST_FAIR")["COMPLETED"] >= 100, 60, "the backlogs to run")
    light = enqueue_many([{"type": "TEST_FAIR", "payload": {}, "fair_key": "light"}] * 3)
    wait_for(lambda: jobs.all_done(803, "TEST_FAIR"), 90, "every job to end")
    with jobs.engine.connect() as conn:
        # Jobs of the busy keys that started after a light job was enqueued, before it
        # started: no more than the windows that were ahead of it (1 + 3 windows), and
        # the claims already under way; without fairness, most of both backlogs.
        overtaken = conn.execute(text(
            """SELECT max((SELECT count(*) FROM "WorkerJob" AS h
                          WHERE h."fairKey" IN ('a', 'b') AND h."startedAt" > l."createdAt"
                            AND h."startedAt" < l."startedAt"))
               FROM "WorkerJob" AS l WHERE l.id = ANY(:light)"""), {"light": light}).scalar_one()
        # The first 400 starts of the two busy keys, while both still had a backlog.
        first = conn.execute(text(
            """SELECT "fairKey" FROM "WorkerJob" WHERE "fairKey" IN ('a', 'b')
               ORDER BY "startedAt" LIMIT 400""")).scalars().all()
    assert overtaken <= 4 * DEFAULT_WINDOW + 20, overtaken
    share = first.count("a") / len(first)
    assert 0.18 <= share <= 0.32, f"weight 1 against 3 got {share:.2f} of the starts"
    for pool in pools:
        pool.send(15)
        pool.wait_exit(20)
