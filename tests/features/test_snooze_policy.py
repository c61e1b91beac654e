"""Snooze and a type's retry policy, on a real database and in a real pool."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from skiplock import claim, enqueue, fail
from skiplock.handlers import JobResult, register_handler, unregister_handler
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import policy
from skiplock.queue_core.features.snooze import snooze
from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, wait_for
from tests.queue_core.helpers import row, sql


def _seconds_until_due(job_id: str) -> float:
    [(s,)] = sql('SELECT EXTRACT(EPOCH FROM "availableAt" - now()) FROM "WorkerJob" '
                 "WHERE id = :id", id=job_id)
    return float(s)


def test_a_snooze_gives_the_attempt_back_and_counts_until_its_bound():
    job_id = enqueue("NAPPER", {}, max_attempts=1)
    for n in (1, 2):
        [job] = claim("w")
        assert snooze(job, 60, max_snoozes=2) == "snoozed"
        r = row(job_id)
        assert (r.st, r.attempts, r.snoozes, r.lockedBy) == ("PENDING", 0, n, None)
        assert 55 < _seconds_until_due(job_id) <= 60
        sql('UPDATE "WorkerJob" SET "availableAt" = now() WHERE id = :id', id=job_id)
    [job] = claim("w")
    assert snooze(job, 60, max_snoozes=2) == "dead_lettered"
    r = row(job_id)
    assert (r.st, r.snoozes, r.lastError) == ("DEAD_LETTER", 3,
                                              "snoozed 2 times, the limit of its type")
    assert snooze(job, 60, max_snoozes=2) == "lost"  # fenced


def test_a_retried_snooze_dead_letter_may_snooze_again():
    from skiplock.queue_core import retry_dead

    job_id = enqueue("NAPPER", {})
    [job] = claim("w")
    assert snooze(job, 60, max_snoozes=0) == "dead_lettered"
    assert retry_dead([job_id]) == [job_id]
    assert row(job_id).snoozes is None  # its bound counts from the retry
    [job] = claim("w")
    assert snooze(job, 60, max_snoozes=1) == "snoozed"


def test_snooze_delays_are_bounded():
    with pytest.raises(InvalidJob):
        JobResult.snooze(-1)
    with pytest.raises(InvalidJob):
        JobResult.snooze(30 * 86400)


def test_a_types_policy_sets_max_attempts_and_backoff():
    register_handler("POLICY", lambda p, j: JobResult(True), max_attempts=7, backoff=[100, 900])
    try:
        job_id = enqueue("POLICY", {})
        assert row(job_id).maxAttempts == 7
        assert row(enqueue("POLICY", {}, max_attempts=2)).maxAttempts == 2  # explicit wins
        [first, _] = claim("w", limit=2)
        assert fail(first, "boom") == "PENDING"
        assert 85 < _seconds_until_due(first.id) <= 110
        sql('UPDATE "WorkerJob" SET "availableAt" = now() WHERE id = :id', id=first.id)
        [again] = claim("w")
        assert fail(again, "boom") == "PENDING"
        assert 800 < _seconds_until_due(first.id) <= 990
    finally:
        unregister_handler("POLICY")
    assert row(enqueue("POLICY", {})).maxAttempts == 3  # the queue's default again


def test_backoff_rules():
    fixed = [0.5]  # no jitter: rand() = 0.5
    policy.set_policy("B1", backoff=30)
    policy.set_policy("B2", backoff=[1, 2, 3])
    policy.set_policy("B3", backoff=lambda n: n * 10)
    try:
        assert policy.backoff_for("B1", 5, lambda: fixed[0]) == 30
        assert [policy.backoff_for("B2", n, lambda: 0.5) for n in (1, 2, 3, 9)] == [1, 2, 3, 3]
        assert policy.backoff_for("B3", 4, lambda: 0.5) == 40
        assert policy.backoff_for("OTHER", 1, lambda: 0.5) == 10  # the default schedule
        with pytest.raises(InvalidJob):
            policy.set_policy("B4", backoff=[])
        with pytest.raises(InvalidJob):
            policy.set_policy("B4", max_attempts=0)
    finally:
        for name in ("B1", "B2", "B3"):
            policy.set_policy(name)


def test_a_pool_runs_a_snoozing_job_to_its_end_without_spending_attempts(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    start_pool("--concurrency", "1", handlers=FEATURE_HANDLERS)
    import tests.features.handlers  # noqa: F401  (the type's max_attempts, here too)

    done = jobs.enqueue("TEST_SNOOZE", {"times": 2})
    dead = jobs.enqueue("TEST_SNOOZE", {"times": 10})
    assert jobs.get(done)["maxAttempts"] == 4
    wait_for(lambda: jobs.get(done)["status"] == "COMPLETED", 20, "the job to complete")
    r = jobs.get(done)
    assert (r["attempts"], r["snoozes"], r["result"]) == (1, 2, {"snoozes": 2})
    wait_for(lambda: jobs.get(dead)["status"] == "DEAD_LETTER", 20, "too many snoozes")
    assert jobs.get(dead)["snoozes"] == 4 and jobs.runs() == {}
