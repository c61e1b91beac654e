from __future__ import annotations

import multiprocessing
import time

from sqlalchemy import text

from skiplock import queue_core as q
from skiplock.queue_core import lifecycle
from skiplock.queue_core import sql as sql_statements
from skiplock.queue_core.database import db
from tests.queue_core.helpers import count, row, sql
from tests.queue_core.helpers import plan as explain


def test_claim_takes_highest_priority_then_oldest():
    low = q.enqueue("X", {"n": "low"}, priority=0)
    high = q.enqueue("X", {"n": "high"}, priority=10)
    low2 = q.enqueue("X", {"n": "low2"}, priority=0)
    later = q.enqueue("X", {"n": "later"}, priority=100, delay=60)
    claimed = q.claim("w1", limit=10)
    assert [j.id for j in claimed] == [high, low, low2]
    assert later not in {j.id for j in claimed}
    for job in claimed:
        assert (job.status, job.attempts, job.locked_by) == ("PROCESSING", 1, "w1")
        r = row(job.id)
        assert r.st == "PROCESSING" and r.lockedBy == "w1" and r.startedAt is not None


def test_a_claim_with_completions_returns_what_a_pool_child_reads_of_its_jobs():
    # The statement a child sends with its completions returns only the columns the
    # child reads (sql._CLAIMED_BY_POOL, Job.from_claim): each must be the row's.
    first = q.enqueue("X", {"n": 1})
    bad = q.enqueue("X", {"n": 2}, priority=5, max_attempts=7)
    sql("""UPDATE "WorkerJob" SET payload = '[1, 2]', "cancelRequestedAt" = now()
           WHERE id = :id""", id=bad)
    done, claimed = lifecycle.complete_and_claim([], 'w "1"', 8)
    assert done == set() and [j.id for j in claimed] == [bad, first]
    for job in claimed:
        r = row(job.id)
        assert (job.type, job.status, job.attempts, job.locked_by, job.priority) == \
            ("X", "PROCESSING", 1, 'w "1"', r.priority)
        assert job.available_at == r.availableAt and job.max_attempts == r.maxAttempts
        assert job.cancel_requested_at == r.cancelRequestedAt
    assert claimed[0].payload == {"_value": [1, 2]} and claimed[0].max_attempts == 7
    assert claimed[0].cancel_requested_at is not None
    assert claimed[1].payload == {"n": 1} and claimed[1].cancel_requested_at is None


def test_a_pool_child_takes_no_more_than_its_share_of_a_queue_running_dry():
    # Shared out among a pool's children (sql._SHARE), the highest priority first, so
    # that the last jobs of a burst end on every child at about the same time.
    ids = [q.enqueue("A", {"i": i}, priority=i) for i in range(10)]
    q.enqueue("PAUSED", {})
    q.enqueue("A", {}, delay=3600)
    sql("""INSERT INTO "WorkerJobPause" (type) VALUES ('PAUSED')""")
    first = q.claim("w", limit=8, children=2)  # 10 ready: 5 each
    assert [j.id for j in first] == ids[::-1][:5]
    second = q.claim("w", limit=8, children=2)
    assert [j.id for j in second] == ids[::-1][5:8]  # 5 left: 3 and 2
    assert len(q.claim("w", limit=8, children=2)) == 1  # 2 left: 1 each
    assert len(q.claim("w", limit=8, children=2)) == 1
    assert q.claim("w", limit=8, children=2) == []
    # A deep queue: every child can take a full bite, and does.
    for _ in range(30):
        q.enqueue("A", {})
    assert len(q.claim("w", limit=8, children=3)) == 8
    assert len(q.claim("w", limit=8, children=2)) == 8
    assert len(q.claim("w", limit=8)) == 8  # alone: everything it asks for
    done, claimed = lifecycle.complete_and_claim([(j, None) for j in first], "w", 8, 2)
    assert done == {j.id for j in first} and len(claimed) == 3  # 6 left
    assert len(q.claim("w", limit=8, types=["A"], children=2)) == 2  # 3 left
    assert count() == 42


def test_claim_respects_limit_and_type_filter():
    for i in range(5):
        q.enqueue("A", {"i": i})
    q.enqueue("B", {})
    assert [j.type for j in q.claim("w", limit=1, types=["B"])] == ["B"]
    assert len(q.claim("w", limit=3, types=["A"])) == 3
    assert q.claim("w", types=[]) == []
    assert len(q.claim("w", limit=10)) == 2
    assert q.claim("w") == []


def test_the_claim_statements_walk_the_claim_index_even_when_one_type_fills_the_queue():
    # One type dominating the backlog (a backfill) is what once made the planner
    # sort every pending row: the real statements, on realistic statistics.
    q.enqueue_many([{"type": "BULK", "payload": {}} for _ in range(20_000)])
    q.enqueue_many([{"type": "RARE", "payload": {}} for _ in range(5)])
    sql('ANALYZE "WorkerJob"')
    for limit in (1, 10):
        plan = explain(sql_statements.CLAIM, {"worker_id": "w", "limit": limit, "children": 2})
        assert "WorkerJob_claim_idx" in plan, plan
        assert not _sorts_the_table(plan) and _JOB_TABLE_SCAN not in plan, plan
    plan = explain(sql_statements.CLAIM_TYPES, {"worker_id": "w", "limit": 1, "children": 2,
                                             "types": ["BULK"]})
    assert _JOB_TABLE_SCAN not in plan and "Sort Method: external" not in plan, plan
    plan = explain(sql_statements.COMPLETE_AND_CLAIM, {
        "ids": "{}", "lockers": "{}", "attempts": "{}", "results": "{}", "worker_id": "w",
        "limit": 10, "children": 2})
    assert "WorkerJob_claim_idx" in plan, plan
    assert not _sorts_the_table(plan) and _JOB_TABLE_SCAN not in plan, plan


def test_a_claim_of_given_types_walks_the_claim_index_when_their_statistics_are_stale():
    # A served type whose backlog grew since the last ANALYZE looks rare to the
    # planner: given as constants, the types made it read and sort every pending row of
    # that type (sql._TYPES). What `python -m bench claim --cases routing` measures.
    sql('ALTER TABLE "WorkerJobLive" SET (autovacuum_enabled = off)')  # the statistics stay old
    try:
        q.enqueue_many([{"type": "OTHER", "payload": {}} for _ in range(20_000)])
        q.enqueue_many([{"type": "NEW", "payload": {}} for _ in range(5)])
        sql('ANALYZE "WorkerJob"')
        q.enqueue_many([{"type": "NEW", "payload": {}} for _ in range(20_000)])
        types = lifecycle.types_param(["NEW"])
        for statement, params in (
            (sql_statements.CLAIM_TYPES, {"worker_id": "w", "limit": 1, "children": 2,
                                          "types": types}),
            (sql_statements.COMPLETE_AND_CLAIM_TYPES, {
                "ids": "{}", "lockers": "{}", "attempts": "{}", "results": "{}",
                "worker_id": "w", "limit": 10, "children": 2, "types": types}),
        ):
            plan = explain(statement, params)
            assert "WorkerJob_claim_idx" in plan and "WorkerJob_pending_type_idx" not in plan, plan
            assert not _sorts_the_table(plan) and _JOB_TABLE_SCAN not in plan, plan
        assert sql_statements.CLAIM_TYPES_AFTER_SAVEPOINT.text.endswith(
            sql_statements.CLAIM_TYPES.text)
    finally:
        sql('ALTER TABLE "WorkerJobLive" RESET (autovacuum_enabled)')


# The claim's only sequential scan is the one that asks whether anything is paused
# at all, of "WorkerJobPause" (a handful of rows), once per statement.
_JOB_TABLE_SCAN = 'Seq Scan on "WorkerJobLive" '


def _sorts_the_table(plan: str) -> bool:
    """Whether the plan sorts rows of the table, not the few the claim locked (the
    share it takes of them is taken in order: sql._SHARE)."""
    return any("Sort Key:" in line and "ready." not in line for line in plan.splitlines())


def _claim_until_empty(worker: str) -> list[str]:
    db.reset_engine()
    seen: list[str] = []
    idle_since = None
    while True:
        jobs = q.claim(worker, limit=5)
        if not jobs:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 0.5:
                return seen
            continue
        idle_since = None
        for job in jobs:
            seen.append(job.id)
            assert q.complete(job)


def test_concurrent_claimers_take_each_job_exactly_once():
    total = 3000
    ids = q.enqueue_many([{"type": "X", "payload": {"i": i}} for i in range(total)])
    # Forked, not spawned: the processes start together, where spawned ones came a
    # second apart, each importing everything first (db.reset_engine leaves this
    # process's connections to it).
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_claim_until_empty, [f"w{i}" for i in range(4)])
    claimed = [job_id for part in results for job_id in part]
    assert len(claimed) == total
    assert set(claimed) == set(ids)
    assert count("status = 'COMPLETED' AND attempts = 1") == total
    assert all(len(part) > 0 for part in results), "every claimer got work"


def test_a_row_inserted_the_way_the_seed_service_does_is_claimed():
    sql(
        """INSERT INTO "WorkerJob" (id, type, payload, status, priority, "availableAt",
               attempts, "maxAttempts", "idempotencyKey", "userId", "createdAt")
           VALUES ('ckseed0000001', 'INTERPRET_EVENT', '{"eventId": "e1"}'::jsonb,
               'PENDING'::"JobStatus", 0, now(), 0, 3, 'interpret:e1', NULL, now())"""
    )
    sql("""INSERT INTO "WorkerJob" (type, payload) VALUES ('X', '{}')""")
    claimed = q.claim("w", limit=5)
    assert {j.id for j in claimed} >= {"ckseed0000001"}
    assert len(claimed) == 2
    job = next(j for j in claimed if j.id == "ckseed0000001")
    assert job.payload == {"eventId": "e1"} and job.attempts == 1
    assert q.complete(job, {"ok": True})
    assert row(job.id).st == "COMPLETED"


def test_a_claim_in_an_older_transaction_dates_its_lease_when_it_runs():
    # A pool child claims its next jobs at the end of the finished job's transaction:
    # a lease dated when that transaction began would already look stuck.
    with db.get_engine().begin() as conn:
        began = conn.execute(text("SELECT now()")).scalar_one()
        q.enqueue("X", {}, conn=conn)  # made ready after the transaction began
        conn.execute(text("SELECT pg_sleep(0.3)"))
        [job] = q.claim("w", conn=conn)
    assert job.locked_at is not None and job.started_at == job.locked_at
    assert (job.locked_at - began).total_seconds() >= 0.3
