"""Data that cannot be decoded or stored costs its own job at most (queue_core/storable.py).

Rows written by another producer that Python cannot decode, errors and
results PostgreSQL cannot store, and a claim that raises in the transaction
that completes a job: no child crashes, no other job pays, no success turns
into a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from tests.pool.conftest import SAMPLE_HANDLERS, Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(90)

HANDLERS = f"{SAMPLE_HANDLERS},tests.pool.hostile_handlers"


def _insert_raw(jobs: Jobs, job_id: str, payload_sql: str, priority: int = 0) -> None:
    """A row as another producer writes it, without skiplock's checks."""
    jobs.execute(f"""INSERT INTO "WorkerJob" (id, type, payload, priority, "maxAttempts")
                     VALUES (:id, 'TEST_RECORD', ({payload_sql})::jsonb, :p, 3)""",
                 id=job_id, p=priority)


def _accounting(jobs: Jobs, job_id: str) -> Any:
    with jobs.engine.connect() as conn:
        return conn.execute(text('SELECT attempts, "lastError" FROM "WorkerJob" WHERE id = :id'),
                            {"id": job_id}).mappings().one()


def _no_crash(pool: Pool, children: list[int]) -> None:
    assert pool.children() == children, "a child died"
    log = pool.log()
    assert "respawning" not in log and "while running" not in log


def test_rows_that_cannot_be_decoded_fail_alone_without_retry_and_nothing_crashes(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    deep = "repeat('[', 3000) || repeat(']', 3000)"
    _insert_raw(jobs, "deep", f"""'{{"x": ' || {deep} || '}}'""", priority=5)
    _insert_raw(jobs, "digits", """'{"n": ' || repeat('9', 5000) || '}'""", priority=5)
    healthy = [jobs.enqueue("TEST_RECORD", {"seconds": 0.05}, priority=p) for p in (9, 5, 0)]
    pool = start_pool("--concurrency", "1", "--batch-size", "4")
    children = pool.wait_children(1)
    wait_for(lambda: jobs.statuses() == {"COMPLETED": 3, "DEAD_LETTER": 2}, 15,
             "every job settled")
    for bad, why in (("deep", "nested too deeply"), ("digits", "cannot be decoded")):
        row = _accounting(jobs, bad)  # this test's driver could not decode the payload either
        assert row["attempts"] == 1 and row["lastError"].startswith("the payload cannot be used")
        assert why in row["lastError"]
    assert all(jobs.get(i)["attempts"] == 1 for i in healthy)
    assert jobs.runs() == {i: 1 for i in healthy}
    _no_crash(pool, children)


def test_a_claim_that_raises_with_a_completion_never_rolls_the_completion_back(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # The claim made in a job's transaction (now() is then earlier than the
    # statement) raises when it meets the "bomb" row; the loop's own claim does not.
    jobs.execute("""
        CREATE FUNCTION pool_test_bomb() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'PROCESSING' AND NEW.payload ? 'bomb'
               AND now() <> statement_timestamp() THEN
                RAISE EXCEPTION 'the claim met a bomb';
            END IF;
            RETURN NEW;
        END $$""")
    jobs.execute("""CREATE TRIGGER pool_test_bomb BEFORE UPDATE ON "WorkerJob"
                    FOR EACH ROW EXECUTE FUNCTION pool_test_bomb()""")
    try:
        first = jobs.enqueue("TEST_RECORD", {"seconds": 0.2}, priority=9)
        bomb = jobs.enqueue("TEST_RECORD", {"bomb": True})
        pool = start_pool("--concurrency", "1")
        children = pool.wait_children(1)
        wait_for(lambda: jobs.all_done(2), 15, "both jobs to complete")
        assert jobs.get(first)["attempts"] == 1 and jobs.get(bomb)["attempts"] == 1
        assert jobs.runs() == {first: 1, bomb: 1}
        assert "the completion commits alone" in pool.log()
        _no_crash(pool, children)
    finally:
        jobs.execute('DROP TRIGGER IF EXISTS pool_test_bomb ON "WorkerJob"')
        jobs.execute("DROP FUNCTION IF EXISTS pool_test_bomb()")


def test_errors_and_results_postgresql_cannot_store_are_made_storable(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    raised = jobs.enqueue("TEST_UNSTORABLE", {"mode": "raise"}, max_attempts=1)
    failed = jobs.enqueue("TEST_UNSTORABLE", {"mode": "fail"})
    odd = jobs.enqueue("TEST_UNSTORABLE", {"mode": "result"})
    huge = jobs.enqueue("TEST_UNSTORABLE", {"mode": "huge"})
    pool = start_pool("--concurrency", "1", handlers=HANDLERS)
    children = pool.wait_children(1)
    wait_for(lambda: jobs.statuses() == {"COMPLETED": 2, "DEAD_LETTER": 2}, 15,
             "every job settled")
    escaped = "nul\\x00 surrogate\\udc80 end"
    assert jobs.get(raised)["lastError"] == f"ValueError: {escaped}"
    error = jobs.get(failed)["lastError"]
    assert error.startswith(escaped) and error.endswith(" more characters]")
    assert len(error) <= 64 * 1024
    result = jobs.get(odd)["result"]
    assert result == {escaped: [escaped, "nan", "<integer of 16610 bits>"]}
    assert jobs.get(odd)["attempts"] == 1
    big = jobs.get(huge)["result"]
    assert big["truncated"] is True and big["bytes"] > 1024 * 1024
    assert big["preview"].startswith('{"blob":"yyy')
    _no_crash(pool, children)
