"""Dependencies between jobs (migration 0016), on a real database: a dependent waits out
of the claim's reach until its last parent ends, in that parent's transaction; the three
policies on a parent that does not complete; what enqueue refuses."""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest

import skiplock
from skiplock.queue_core import (
    InvalidJob,
    claim,
    complete,
    enqueue,
    enqueue_many,
    fail,
    parent_results,
    parents,
    retry_dead,
)
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.features.cancel import cancel
from tests.queue_core.helpers import count, row, sql


def take(job_type: str, limit: int = 100) -> list[skiplock.Job]:
    return claim("w", limit=limit, types=[job_type])


def waiting(job_id: str) -> bool:
    r = row(job_id)
    return r.st == "PENDING" and r.heldBack is False


def test_a_dependent_is_claimed_only_once_its_last_parent_completed() -> None:
    a, b = enqueue("P", {}), enqueue("P", {})
    child = enqueue("C", {"n": 1}, depends_on=[a, b])
    assert waiting(child) and row(child).waitingFor == 2
    assert take("C") == []
    first, second = take("P")
    complete(first, {"half": 1})
    assert waiting(child) and row(child).waitingFor == 1
    assert take("C") == []
    complete(second, {"half": 2})
    assert row(child).heldBack is None and row(child).waitingFor == 0
    assert [j.id for j in take("C")] == [child]


def test_the_dependent_is_ready_in_the_transaction_that_ends_its_last_parent(
        database_url: str) -> None:
    """Before that commit nobody can claim it; after it, the next claim takes it."""
    parent = enqueue("P", {})
    child = enqueue("C", {}, depends_on=[parent])
    job = take("P")[0]
    conn = psycopg2.connect(libpq_dsn(database_url))
    try:
        with conn.cursor() as cur:
            cur.execute('UPDATE "WorkerJob" SET status = \'COMPLETED\' WHERE id = %s', (job.id,))
            cur.execute('SELECT "heldBack" FROM "WorkerJob" WHERE id = %s', (child,))
            assert cur.fetchone() == (None,)  # ready inside the parent's transaction
        assert take("C") == []  # not committed yet: out of everybody else's reach
        conn.commit()
    finally:
        conn.close()
    assert [j.id for j in take("C")] == [child]


def test_fan_in_of_many_parents_ended_in_many_transactions() -> None:
    n = 300
    ids = enqueue_many([{"type": "P", "payload": {"i": i}} for i in range(n)]
                       + [{"type": "C", "payload": {}, "depends_on": list(range(n))}])
    child = ids[-1]
    assert row(child).waitingFor == n
    assert sql('SELECT count(*) FROM "WorkerJobDependency" WHERE child = :c', c=child)[0][0] == n
    claimed = take("P", limit=n)
    for i, job in enumerate(claimed):
        assert take("C") == [], f"ready after {i} of {n} parents"
        complete(job, {"i": job.payload["i"]})
    assert [j.id for j in take("C")] == [child]
    results = parent_results(child)
    assert sorted(r["i"] for r in results.values()) == list(range(n))


def test_a_dependent_reads_its_parents_results_and_statuses() -> None:
    a = enqueue("P", {})
    b = enqueue("P", {})
    child = enqueue("C", {}, depends_on={a: "run", b: "run"})
    ja, jb = take("P")
    complete(ja, {"answer": 42})
    fail(jb, "no luck", retry=False)
    assert parent_results(child) == {a: {"answer": 42}}
    assert {(e.id, e.status, e.policy) for e in parents(child)} == {
        (a, "COMPLETED", "run"), (b, "DEAD_LETTER", "run")}
    assert take("C")[0].id == child


def test_cancel_is_the_default_and_cascades_to_the_dependents_dependents() -> None:
    ids = enqueue_many([{"type": "P", "payload": {}},
                        {"type": "C", "payload": {}, "depends_on": [0]},
                        {"type": "G", "payload": {}, "depends_on": [1]},
                        {"type": "G", "payload": {}, "depends_on": [1, 0],
                         "on_parent_failure": "run"}])
    parent, child, grandchild, tolerant = ids
    fail(take("P")[0], "boom", retry=False)
    assert row(child).st == "FAILED" and row(child).heldBack is None
    assert f"depends on job {parent}, which was dead-lettered" in row(child).lastError
    assert row(grandchild).st == "FAILED"
    assert f"depends on job {child}, which was cancelled" in row(grandchild).lastError
    # "run" on both of its edges: one parent dead-lettered, the other cancelled: it runs.
    assert row(tolerant).st == "PENDING" and row(tolerant).heldBack is None
    assert take("G")[0].id == tolerant


def test_run_anyway_counts_a_cancelled_parent_once_even_if_it_is_retried_and_completes(
) -> None:
    a, b = enqueue("P", {}), enqueue("P", {})
    child = enqueue("C", {}, depends_on=[a, b], on_parent_failure="run")
    cancel(a)
    assert row(child).waitingFor == 1
    assert retry_dead([a]) == [a]
    claimed = {j.id: j for j in take("P")}
    complete(claimed[a])
    assert row(child).waitingFor == 1  # a's edge was resolved at its cancel: not twice
    complete(claimed[b])
    assert take("C")[0].id == child


def test_hold_keeps_the_dependent_waiting_until_the_parent_completes_after_a_retry() -> None:
    parent = enqueue("P", {})
    child = enqueue("C", {}, depends_on=[parent], on_parent_failure="hold")
    fail(take("P")[0], "boom", retry=False)
    assert waiting(child)
    assert "held: it depends on job" in row(child).lastError
    assert f"skiplock retry {child}" in row(child).lastError
    assert take("C") == []
    retry_dead([parent])
    complete(take("P")[0])
    assert take("C")[0].id == child


def test_hold_is_released_by_a_retry_of_the_dependent() -> None:
    parent = enqueue("P", {})
    child = enqueue("C", {}, depends_on=[parent], on_parent_failure="hold")
    cancel(parent)
    assert waiting(child)
    assert retry_dead([child]) == [child]
    assert "released by hand" in row(child).lastError
    assert take("C")[0].id == child


def test_a_parent_that_already_ended_is_applied_at_enqueue() -> None:
    done, dead = enqueue("P", {}), enqueue("P", {})
    jd, jx = sorted(take("P"), key=lambda j: j.id != done)
    complete(jd, {"ok": True})
    fail(jx, "boom", retry=False)
    ready = enqueue("C", {}, depends_on=[done])
    assert row(ready).heldBack is None and row(ready).waitingFor == 0
    cancelled = enqueue("C", {}, depends_on=[done, dead])
    assert row(cancelled).st == "FAILED"
    held = enqueue("C", {}, depends_on=[dead], on_parent_failure="hold")
    assert waiting(held) and "held" in row(held).lastError
    ran = enqueue("C", {}, depends_on=[dead], on_parent_failure="run")
    assert row(ran).heldBack is None
    assert {j.id for j in take("C")} == {ready, ran}


@pytest.mark.parametrize("bad, message", [
    ({"depends_on": ["no-such-job"]}, "depends_on names no job with id no-such-job"),
    ({"depends_on": [1]}, "job #1 depends on itself"),
    ({"depends_on": [2]}, "job #1 depends on job #2, which comes after it"),
    ({"depends_on": [0], "on_parent_failure": "ignore"}, "must be one of cancel, run, hold"),
    ({"depends_on": "abc"}, "must be a list of job ids"),
])
def test_cycles_unknown_and_wrong_references_are_refused_and_nothing_is_written(
        bad: dict, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        enqueue_many([{"type": "P", "payload": {}}, {"type": "C", "payload": {}, **bad},
                      {"type": "P", "payload": {}}])
    assert count() == 0
    assert sql('SELECT count(*) FROM "WorkerJobDependency"')[0][0] == 0


def test_enqueue_refuses_a_position_and_an_unknown_id_in_one_line() -> None:
    with pytest.raises(InvalidJob, match="a position refers to an earlier job"):
        enqueue("C", {}, depends_on=[0])
    with pytest.raises(InvalidJob) as caught:
        enqueue("C", {}, depends_on=["nope"])
    assert "\n" not in str(caught.value)
    assert count() == 0


def test_a_key_that_exists_gives_the_existing_job_and_no_new_edges() -> None:
    first = enqueue_many([{"type": "P", "payload": {}, "idempotency_key": "p"},
                          {"type": "C", "payload": {}, "depends_on": [0],
                           "idempotency_key": "c"}])
    again = enqueue_many([{"type": "P", "payload": {}, "idempotency_key": "p"},
                          {"type": "C", "payload": {}, "depends_on": [0],
                           "idempotency_key": "c"},
                          {"type": "D", "payload": {}, "depends_on": [0]}])
    assert again[:2] == first
    assert count() == 3
    # The new job depends on the existing parent, found by its key.
    assert [e.id for e in parents(again[2])] == [first[0]]
    assert row(first[0]).hasDependents is True


def test_a_waiting_dependent_holds_no_slot_of_its_concurrency_key() -> None:
    parent = enqueue("P", {})
    waiting_one = enqueue("K", {}, depends_on=[parent], concurrency_key="k", concurrency=1)
    free = enqueue("K", {}, concurrency_key="k", concurrency=1)
    assert row(free).heldBack is None  # the slot went to the job that can run
    assert [j.id for j in take("K")] == [free]
    complete(take("P")[0])
    assert row(waiting_one).heldBack is True  # ready, and now waiting for the slot
    complete(_job(free))
    assert [j.id for j in take("K")] == [waiting_one]


def _job(job_id: str) -> skiplock.JobRef:
    r = row(job_id)
    return skiplock.JobRef(r.id, r.lockedBy, r.attempts)


def test_a_deleted_parent_applies_the_policy_and_cleanup_keeps_a_parent_a_dependent_needs(
) -> None:
    a, b = enqueue("P", {}), enqueue("P", {})
    cancelled = enqueue("C", {}, depends_on=[a])
    ran = enqueue("C", {}, depends_on=[a, b], on_parent_failure="run")
    sql('DELETE FROM "WorkerJob" WHERE id = :a', a=a)
    assert row(cancelled).st == "FAILED" and "was deleted" in row(cancelled).lastError
    assert row(ran).waitingFor == 1
    complete(take("P")[0], {"kept": True})
    sql("""UPDATE "WorkerJob" SET "completedAt" = now() - interval '30 days' WHERE id = :b""",
        b=b)
    skiplock.cleanup("7d")
    assert row(b) is not None  # its dependent has yet to run and read it
    complete(take("C")[0])
    skiplock.cleanup("7d")
    assert row(b) is None
    assert sql('SELECT count(*) FROM "WorkerJobDependency" WHERE parent = :b', b=b)[0][0] == 0


def test_an_enqueue_and_the_end_of_its_parent_at_the_same_time_never_strand_it(
        database_url: str) -> None:
    """The enqueue locks the parent: a completion that comes meanwhile waits for the
    edge's commit, and then sees it."""
    parent = enqueue("P", {})
    job = take("P")[0]
    enq = psycopg2.connect(libpq_dsn(database_url))
    try:
        with enq.cursor() as cur:
            cur.execute("BEGIN")
        child = enqueue("C", {}, depends_on=[parent], conn=enq)
        finished = threading.Event()

        def finish() -> None:
            complete(job)
            finished.set()

        ender = threading.Thread(target=finish)
        ender.start()
        assert not finished.wait(0.5)  # waits for the enqueue's lock on the parent
        enq.commit()
        ender.join(10)
        assert finished.is_set()
    finally:
        enq.close()
    assert [j.id for j in take("C")] == [child]


def test_a_long_chain_cancelled_at_its_head_needs_no_deep_recursion() -> None:
    n = 400
    enqueue_many([{"type": "P", "payload": {}}]
                 + [{"type": "C", "payload": {}, "depends_on": [i]} for i in range(n)])
    fail(take("P")[0], "boom", retry=False)
    assert count("status = 'FAILED'") == n


def test_dependents_in_an_applications_transaction_on_psycopg_3(database_url: str) -> None:
    """A borrowed psycopg 3 connection, and a SQLAlchemy engine on psycopg 3 (which binds
    on the server: one statement per query string), take the graph's statements too."""
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parent = enqueue("P", {})
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        child = enqueue("C", {}, depends_on=[parent], conn=conn)
        ids = enqueue_many([{"type": "P", "payload": {}},
                            {"type": "C", "payload": {}, "depends_on": [0, parent]}], conn=conn)
    engine = create_engine(make_url(database_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            other = enqueue("C", {}, depends_on=[parent], conn=conn)
    finally:
        engine.dispose()
    assert [row(i).waitingFor for i in (child, ids[1], other)] == [1, 2, 1]
    complete(next(j for j in take("P") if j.id == parent))
    assert {j.id for j in take("C")} == {child, other}


def _xmin(table: str, column: str, value: str) -> int:
    """The transaction that wrote the row."""
    return int(sql(f'SELECT xmin::text::bigint FROM "{table}" WHERE {column} = :v', v=value)[0][0])


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_a_dependent_on_a_connection_in_autocommit_is_still_one_transaction(
        database_url: str, driver: str) -> None:
    """A caller's connection in autocommit (Django's outside `atomic()`) would commit the
    parent's lock before the edge is written: the graph's write begins and commits a
    transaction of its own there, and leaves the connection as it found it."""
    import psycopg

    parent = enqueue("P", {})
    conn: Any = (psycopg2.connect(libpq_dsn(database_url)) if driver == "psycopg2"
                 else psycopg.connect(libpq_dsn(database_url)))
    conn.autocommit = True

    def idle() -> bool:
        if driver == "psycopg2":
            return conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    try:
        child = enqueue("C", {}, depends_on=[parent], conn=conn)
        assert idle()
        with pytest.raises(InvalidJob, match="names no job"):
            enqueue("C", {}, depends_on=["no-such-job"], conn=conn)
        assert idle() and conn.autocommit  # rolled back, not left open
    finally:
        conn.close()
    # The parent's mark, the dependent and its edge are one transaction's.
    assert (_xmin("WorkerJob", "id", parent) == _xmin("WorkerJob", "id", child)
            == _xmin("WorkerJobDependency", "child", child))
    complete(take("P")[0])
    assert [j.id for j in take("C")] == [child]
