"""Unique windows on a real database: while active, for a period, and the seed's default."""

from __future__ import annotations

import threading

import pytest

from skiplock import cancel, claim, complete, enqueue, enqueue_many
from skiplock.queue_core.errors import InvalidJob
from tests.queue_core.helpers import count, row, sql


def test_the_default_holds_as_long_as_the_job_exists():
    first = enqueue("U", {}, idempotency_key="k")
    [job] = claim("w")
    complete(job, None)
    assert enqueue("U", {}, idempotency_key="k") == first
    assert row(first).uniqueKey is None and row(first).idempotencyKey == "k"


def test_while_active_a_key_is_free_again_once_its_job_ended():
    first = enqueue("U", {}, idempotency_key="refresh:u1", unique_for="active")
    assert enqueue("U", {}, idempotency_key="refresh:u1", unique_for="active") == first
    [job] = claim("w")
    assert enqueue("U", {}, idempotency_key="refresh:u1", unique_for="active") == first
    complete(job, None)
    second = enqueue("U", {}, idempotency_key="refresh:u1", unique_for="active")
    assert second != first
    assert (row(first).uniqueKey, row(first).st) == (None, "COMPLETED")
    assert row(second).uniqueKey == "refresh:u1" and row(second).idempotencyKey is None
    cancel(second, by="t")  # a cancelled job has ended too
    assert enqueue("U", {}, idempotency_key="refresh:u1", unique_for="active") not in (
        first, second)


def test_for_a_period_a_key_holds_whatever_the_jobs_state_until_the_period_is_over():
    first = enqueue("U", {}, idempotency_key="digest:u1", unique_for="1h")
    [job] = claim("w")
    complete(job, None)
    assert enqueue("U", {}, idempotency_key="digest:u1", unique_for="1h") == first
    [(s,)] = sql('SELECT EXTRACT(EPOCH FROM "uniqueUntil" - "createdAt") FROM "WorkerJob" '
                 "WHERE id = :id", id=first)
    assert abs(float(s) - 3600) < 1
    sql('UPDATE "WorkerJob" SET "uniqueUntil" = now() - interval \'1 s\' WHERE id = :id',
        id=first)
    assert enqueue("U", {}, idempotency_key="digest:u1", unique_for="1h") != first


def test_a_batch_and_concurrent_enqueues_of_one_scoped_key_make_one_job():
    ids = enqueue_many([{"type": "U", "payload": {"n": i}, "idempotency_key": "same",
                         "unique_for": "active"} for i in range(3)])
    assert len(set(ids)) == 1
    results: list[str] = []

    def add() -> None:
        results.append(enqueue("U", {}, idempotency_key="race", unique_for="10m"))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and count("\"uniqueKey\" = 'race'") == 1


def test_bad_windows_are_refused():
    with pytest.raises(InvalidJob, match="needs an idempotency key"):
        enqueue("U", {}, unique_for="active")
    with pytest.raises(InvalidJob, match="unique_for must be"):
        enqueue("U", {}, idempotency_key="k", unique_for="sometimes")
    with pytest.raises(InvalidJob, match="unique_for must be"):
        enqueue("U", {}, idempotency_key="k", unique_for=0)


def test_the_command_line_scopes_a_key():
    from click.testing import CliRunner

    from skiplock.cli import main
    from skiplock.queue_core import config

    def cli(*args: str) -> str:
        config.clear_cache()
        result = CliRunner().invoke(main, ["enqueue", "U", "{}", "--any-type", *args],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output.strip()

    first = cli("--key", "cli-k", "--unique-for", "active")
    assert cli("--key", "cli-k", "--unique-for", "active") == first
    assert row(first).uniqueKey == "cli-k"
