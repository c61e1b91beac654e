"""Parking (queue_core/features/parking.py) on the real table, without pools: who is live in the
process table, the grace, the front of the claim's order, keyed jobs, putting back."""

from __future__ import annotations

import select
from collections.abc import Sequence

import psycopg2

from skiplock import queue_core as q
from skiplock.ops import processes
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.features import parking
from tests.queue_core.helpers import row, sql


def age(*job_ids: str, seconds: float = 600) -> None:
    """Pretend the jobs have been due for `seconds`."""
    sql('UPDATE "WorkerJob" SET "availableAt" = now() - make_interval(secs => :s) '
        "WHERE id = ANY(:ids)", s=seconds, ids=list(job_ids))


def master(name: str, served: Sequence[str] | None, *, beat_age_s: float = 0) -> None:
    """A master's row in the process table, as a live (or a long silent) pool writes it."""
    processes.beat(name, host="h", pid=1, started_at=0.0, state="running", concurrency=1,
                   children=[], served=served)  # None: as an older skiplock writes it
    sql("""UPDATE "WorkerProcess" SET "heartbeatAt" = now() - make_interval(secs => :s)
           WHERE id = :id""", s=beat_age_s, id=name)


def parked(job_id: str) -> bool:
    return bool(row(job_id).heldBack)


def park(served: Sequence[str] = ("A",), grace_s: float = 60, window: int = 1000) -> dict[str, int]:
    return dict(parking.park_unserved(served, live_s=30, grace_s=grace_s, window=window))


def test_jobs_of_a_type_no_live_master_serves_leave_the_claim_and_come_back():
    a = q.enqueue("A", {})
    b = [q.enqueue("B", {"i": i}) for i in range(3)]
    c = q.enqueue("C", {})
    age(a, *b, c)
    master("other", ["C"])  # another deployment, live, serves C
    master("gone", ["B"], beat_age_s=120)  # B's pool stopped heartbeating long ago
    assert park() == {"B": 3}
    assert [parked(i) for i in (a, *b, c)] == [False, True, True, True, False]
    for i in b:
        r = row(i)
        assert (r.st, r.attempts, r.lastError, r.concurrencyKey) == ("PENDING", 0, None, None)
    # Parked jobs are out of every claim, with or without a type filter.
    assert {j.id for j in q.claim("w", limit=10)} == {a, c}
    assert q.claim("w", limit=10, types=["B"]) == []
    assert park() == {}  # nothing left to park: the pass finds nothing

    assert parking.parked_by_type() == {"B": 3}
    assert parking.unpark(["A", "C"]) == {}  # only the caller's own types come back
    assert dict(parking.unpark(["B"], batch=2)) == {"B": 2}  # a batch at a time
    assert dict(parking.unpark(["B"])) == {"B": 1}
    assert not any(parked(i) for i in b)
    assert {j.id for j in q.claim("w", limit=10, types=["B"])} == set(b)


def test_nothing_is_parked_while_an_older_master_that_claims_every_type_is_live():
    job = q.enqueue("B", {})
    age(job)
    master("old", None)
    assert park() == {}
    assert not parked(job)
    sql('DELETE FROM "WorkerProcess"')
    assert park() == {"B": 1}


def test_a_job_due_for_less_than_the_grace_a_keyed_job_and_the_callers_types_stay():
    young = q.enqueue("B", {})
    keyed = q.enqueue("B", {}, concurrency_key="k", concurrency=1)
    waiting = q.enqueue("B", {}, concurrency_key="k", concurrency=1)  # held back for a slot
    mine = q.enqueue("A", {})
    later = q.enqueue("B", {}, delay=3600)
    age(keyed, waiting, mine, seconds=600)
    assert row(waiting).heldBack and not row(keyed).heldBack
    assert park(served=["A"], grace_s=60) == {}
    # The keyed jobs keep what their key's slot counting needs; put back leaves them alone.
    assert [row(i).heldBack for i in (young, keyed, waiting, mine, later)] == \
        [None, None, True, None, None]
    assert parking.unpark(["B"]) == {}
    assert row(waiting).heldBack
    assert sql('SELECT active FROM "WorkerConcurrencyKey"')[0].active == 1
    assert park(served=["A"], grace_s=0) == {"B": 1}  # `young` is old enough now
    assert parked(young) and not parked(later)


def test_a_pass_looks_only_at_the_front_of_the_claims_order():
    front = [q.enqueue("B", {"i": i}, priority=5) for i in range(3)]
    served = [q.enqueue("A", {"i": i}, priority=3) for i in range(3)]
    behind = q.enqueue("B", {}, priority=1)
    age(*front, *served, behind)
    assert park(window=5) == {"B": 3}  # the 5 first rows: 3 of B, 2 of A
    assert not parked(behind)
    assert park(window=5) == {"B": 1}  # the front moved on, and the next pass takes it
    assert parked(behind)


def test_putting_jobs_back_wakes_idle_workers(database_url):
    listener = psycopg2.connect(libpq_dsn(database_url))
    listener.autocommit = True
    try:
        listener.cursor().execute("LISTEN skiplock_jobs")
        job = q.enqueue("B", {})
        select.select([listener], [], [], 5)  # the enqueue's own wake-up
        listener.poll()
        assert listener.notifies
        listener.notifies.clear()
        age(job)
        assert park() == {"B": 1}
        assert parking.unpark(["A"]) == {}  # nothing put back: nobody woken
        listener.poll()
        assert listener.notifies == []
        assert parking.unpark(["B"]) == {"B": 1}
        select.select([listener], [], [], 5)
        listener.poll()
        assert [n.channel for n in listener.notifies] == ["skiplock_jobs"]
    finally:
        listener.close()
