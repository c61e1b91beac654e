"""Priority aging on a real database: the maintenance step, and a low job under a stream."""

from __future__ import annotations

from skiplock import claim, complete, enqueue
from skiplock.queue_core.features import aging
from tests.queue_core.helpers import row, sql


def _waited(job_id: str, seconds: float) -> None:
    """Pretend the job came due `seconds` ago (no sleeping)."""
    sql('UPDATE "WorkerJob" SET "availableAt" = now() - make_interval(secs => :s) '
        "WHERE id = :id", s=seconds, id=job_id)


def test_a_pass_raises_waiting_jobs_by_a_step_to_the_bound_once_per_wait():
    low = enqueue("A", {}, priority=-3)
    fresh = enqueue("A", {}, priority=-3)
    top = enqueue("A", {}, priority=5)
    held = enqueue("A", {}, priority=-3, delay=3600)
    _waited(low, 600)
    _waited(top, 600)
    assert aging.age(300, step=2, max_priority=0) == {"A": 1}
    assert (row(low).priority, row(low).agedFrom) == (-1, -3)
    assert (row(fresh).priority, row(fresh).agedFrom) == (-3, None)  # not waited long enough
    assert row(top).priority == 5 and row(held).agedFrom is None
    assert aging.age(300, step=2, max_priority=0) == {}  # raised less than 300 s ago
    sql("""UPDATE "WorkerJob" SET "agedAt" = now() - interval '301 s' WHERE id = :id""", id=low)
    assert aging.age(300, step=2, max_priority=0) == {"A": 1}
    assert (row(low).priority, row(low).agedFrom) == (0, -3)  # the bound, not 1
    sql("""UPDATE "WorkerJob" SET "agedAt" = now() - interval '301 s' WHERE id = :id""", id=low)
    assert aging.age(300, step=2, max_priority=0) == {}


def test_without_a_bound_a_starving_job_reaches_the_top_and_runs_before_the_stream():
    low = enqueue("A", {"low": True}, priority=0)
    _waited(low, 60)
    ran_before = 0
    for _ in range(30):  # a stream of urgent jobs, always one waiting
        enqueue("A", {}, priority=10)
        aging.age(10, step=5)
        sql("""UPDATE "WorkerJob" SET "agedAt" = "agedAt" - interval '11 s'
               WHERE "agedAt" IS NOT NULL""")  # the next pass comes after the wait
        [job] = claim("w")
        complete(job, None)
        if job.id == low:
            break
        ran_before += 1
    assert row(low).st == "COMPLETED" and row(low).agedFrom == 0
    assert ran_before <= 2  # two raises of 5 reach 10; then it is the oldest of 10


def test_stats_and_metrics_show_the_aged_jobs():
    from skiplock.ops.health import collect
    from skiplock.pool.metrics import read_queue

    low = enqueue("A", {}, priority=-1)
    enqueue("A", {}, priority=1)
    _waited(low, 60)
    aging.age(30)
    assert (collect().aged, collect().aged_by_type) == (1, {"A": 1})
    assert read_queue()["aged"] == {"A": 1}


def test_two_pools_aging_run_a_starving_job_before_the_stream(start_pool, jobs) -> None:
    from skiplock import enqueue_many
    from tests.pool.conftest import wait_for

    stream = enqueue_many([{"type": "TEST_RECORD", "payload": {}, "priority": 10}
                           for _ in range(400)])
    low = enqueue("TEST_RECORD", {}, priority=0)
    _waited(low, 3600)  # the stream's jobs came due after it; without aging it runs last
    for _ in range(2):  # two hosts, each aging; the low job is raised once
        start_pool("--concurrency", "1", "--age-after", "1s", "--age-step", "10")
    wait_for(lambda: row(low).st == "COMPLETED", 60, "the low job to run")
    [(before,)] = sql("""SELECT count(*) FROM "WorkerJob" WHERE id = ANY(:ids)
                         AND "completedAt" < (SELECT "startedAt" FROM "WorkerJob" WHERE id = :low)
                      """, ids=stream, low=low)
    assert before < 200 and (row(low).priority, row(low).agedFrom) == (10, 0)
