"""Debounce on a real database: one pending job per key, moved or replaced, under races."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from skiplock import claim, complete, enqueue, enqueue_many, fail
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import debounce
from tests.queue_core.helpers import count, row, sql

PENDING_OF = "type = 'D' AND \"debounceKey\" = :k AND status = 'PENDING'"


def _due_in(job_id: str) -> float:
    [(s,)] = sql('SELECT EXTRACT(EPOCH FROM "availableAt" - now()) FROM "WorkerJob" '
                 "WHERE id = :id", id=job_id)
    return float(s)


def test_delay_moves_the_pending_job_and_keeps_its_payload_replace_takes_the_latest():
    first = enqueue("D", {"n": 1}, debounce="1s", debounce_key="u1")
    assert enqueue("D", {"n": 2}, debounce="5m", debounce_key="u1") == first
    [waiting] = sql(f'SELECT * FROM "WorkerJob" WHERE {debounce.WAITING}')
    assert "debounced by key u1" in debounce.reason(waiting.availableAt, waiting.debounceKey,
                                                    waiting.debounceMoves)
    assert 290 < _due_in(first) <= 300
    assert (row(first).payload, row(first).debounceMoves) == ({"n": 1}, 1)
    assert enqueue("D", {"n": 3}, debounce=60, debounce_key="u1",
                   debounce_mode="replace") == first
    assert 50 < _due_in(first) <= 60  # the latest enqueue's run time, even if sooner
    assert (row(first).payload, row(first).debounceMoves) == ({"n": 3}, 2)
    other = enqueue("D", {"n": 4}, debounce="1s", debounce_key="u2")
    other_type = enqueue("E", {"n": 5}, debounce="1s", debounce_key="u1")
    assert len({first, other, other_type}) == 3


def test_once_claimed_a_new_enqueue_makes_a_new_job_and_a_retry_does_not_collide():
    first = enqueue("D", {"n": 1}, debounce=0, debounce_key="k")
    [job] = claim("w")
    assert job.id == first and row(first).debounceKey == "k"  # kept, out of the index
    second = enqueue("D", {"n": 2}, debounce="1m", debounce_key="k")
    assert second != first
    assert fail(job, "boom") == "PENDING"  # back to PENDING beside the new pending job
    assert row(first).debounceKey is None  # an ordinary job now
    assert enqueue("D", {"n": 3}, debounce="1m", debounce_key="k") == second
    assert count(PENDING_OF, k="k") == 1


def test_a_call_that_repeats_a_key_folds_it_in_order():
    ids = enqueue_many([
        {"type": "D", "payload": {"n": 1}, "debounce": "1m", "debounce_key": "a"},
        {"type": "D", "payload": {"n": 2}},
        {"type": "D", "payload": {"n": 3}, "debounce": "1m", "debounce_key": "a",
         "debounce_mode": "replace"},
        {"type": "D", "payload": {"n": 4}, "debounce": "1m", "debounce_key": "b"},
    ])
    assert ids[0] == ids[2] and len(set(ids)) == 3
    assert row(ids[0]).payload == {"n": 3} and row(ids[3]).payload == {"n": 4}


def _enqueue_many_ways(key: str, n: int, barrier: threading.Barrier,
                       errors: list[BaseException]) -> None:
    try:
        barrier.wait()
        for i in range(5):
            enqueue("D", {"n": n, "i": i}, debounce="1h", debounce_key=key,
                    debounce_mode="replace")
    except BaseException as exc:  # noqa: BLE001 - the main thread reports it
        errors.append(exc)


def test_concurrent_enqueues_leave_one_pending_job_with_the_last_run_time_and_payload():
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_enqueue_many_ways, args=("race", n, barrier, errors))
               for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    [(job_id, moves, payload, due_at, last_at)] = sql(
        'SELECT id, "debounceMoves", payload, "availableAt", '
        '"availableAt" - interval \'1 hour\' FROM "WorkerJob"')
    assert moves == 8 * 5 - 1 and payload["i"] == 4
    # The row's run time is the last of the 40 enqueues': no later statement ran.
    assert due_at > last_at


def test_an_enqueue_racing_a_claim_moves_the_pending_row_or_makes_a_new_one(database_url):
    # The claim holds the pending row locked, not committed yet, while another
    # session debounces the key: the enqueue waits for the claim, then finds the
    # row claimed and inserts a new pending job; nothing is lost.
    first = enqueue("D", {"n": 1}, debounce=0, debounce_key="k")
    claimer = psycopg2.connect(libpq_dsn(database_url))
    try:
        with claimer.cursor() as cur:
            cur.execute("""UPDATE "WorkerJob" SET status = 'PROCESSING', attempts = 1,
                           "lockedBy" = 'w', "lockedAt" = now(), "startedAt" = now()
                           WHERE id = %s""", (first,))
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(
            enqueue("D", {"n": 2}, debounce="1m", debounce_key="k", debounce_mode="replace")))
        thread.start()
        deadline = time.monotonic() + 10
        while not sql("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                      "AND datname = current_database()"):
            assert time.monotonic() < deadline, "the enqueue never waited for the claim"
            time.sleep(0.01)
        claimer.commit()
        thread.join(10)
    finally:
        claimer.close()
    [second] = result
    assert second != first and row(second).payload == {"n": 2}
    assert (row(first).st, row(first).payload) == ("PROCESSING", {"n": 1})
    assert count(PENDING_OF, k="k") == 1


def test_a_moved_holder_of_a_concurrency_slot_gives_it_to_a_job_due_sooner():
    holder = enqueue("D", {}, debounce=0, debounce_key="k", concurrency_key="c", concurrency=1)
    waiting = enqueue("D", {}, delay=10, concurrency_key="c", concurrency=1)
    assert (row(holder).heldBack, row(waiting).heldBack) == (None, True)
    # Moved: due after the waiting one now.
    enqueue("D", {}, debounce="1h", debounce_key="k", concurrency_key="c", concurrency=1)
    assert (row(holder).heldBack, row(waiting).heldBack) == (True, None)
    [(active,)] = sql("""SELECT active FROM "WorkerConcurrencyKey" WHERE key = 'c'""")
    assert active == 1


def test_a_row_inserted_by_another_producer_is_refused_while_its_key_is_pending():
    enqueue("D", {}, debounce="1m", debounce_key="k")
    with pytest.raises(Exception, match="WorkerJob_debounce_key"):
        sql("""INSERT INTO "WorkerJob" (id, type, payload, "debounceKey")
               VALUES ('x', 'D', '{}', 'k')""")
    # ON CONFLICT with a target names the live part, whose unique index it needs
    # ("WorkerJob" is partitioned: docs/schema.md, "History").
    sql("""INSERT INTO "WorkerJobLive" AS w (id, type, payload, "debounceKey")
           VALUES ('y', 'D', '{"n": 2}', 'k')
           ON CONFLICT (type, "debounceKey") WHERE status = 'PENDING' AND "debounceKey" IS NOT NULL
           DO UPDATE SET "availableAt" = EXCLUDED."availableAt", payload = EXCLUDED.payload""")
    assert count() == 1 and [job.payload for job in claim("w")] == [{"n": 2}]


def test_bad_debounces_are_refused():
    with pytest.raises(InvalidJob, match="go together"):
        enqueue("D", {}, debounce="1m")
    with pytest.raises(InvalidJob, match="go together"):
        enqueue("D", {}, debounce_key="k")
    with pytest.raises(InvalidJob, match="debounce_mode must be"):
        enqueue("D", {}, debounce="1m", debounce_key="k", debounce_mode="merge")
    with pytest.raises(InvalidJob, match="not a duration"):
        enqueue("D", {}, debounce="soon", debounce_key="k")
    with pytest.raises(InvalidJob, match="does not go with delay"):
        enqueue("D", {}, debounce="1m", debounce_key="k", delay=5)
    with pytest.raises(InvalidJob, match="does not go with idempotency_key"):
        enqueue("D", {}, debounce="1m", debounce_key="k", idempotency_key="i")
    assert count() == 0
    job_id = enqueue("D", {}, debounce="0", debounce_key="k")
    [job] = claim("w")
    complete(job, None)
    assert row(job_id).st == "COMPLETED"


def test_stats_metrics_and_the_dashboard_show_the_debounced_jobs():
    from skiplock.ops.health import collect
    from skiplock.pool.metrics import read_queue

    enqueue("D", {}, debounce="1m", debounce_key="a")
    enqueue("D", {}, debounce="1m", debounce_key="a")
    enqueue("E", {}, debounce=0, debounce_key="a")
    enqueue("E", {})
    figures = collect().to_dict()
    assert (figures["debounced"], figures["debouncedNotDue"], figures["debounceMoves"]) == (2, 1, 1)
    assert figures["debouncedByType"] == {"D": 1, "E": 1}
    reading = read_queue()
    assert reading["debounced"] == {"D": 1, "E": 1} and reading["debounce_moves"] == 1
    from skiplock.dashboard.app import create_app
    from skiplock.dashboard.settings import DashboardSettings

    page = create_app(DashboardSettings()).test_client().get("/?fragment=1").get_data(as_text=True)
    assert 'data-debounced="2"' in page and "1 enqueues folded in" in page


def test_two_pools_run_every_keys_last_enqueue_after_it(start_pool, jobs) -> None:
    from tests.pool.conftest import wait_for

    for _ in range(2):  # two hosts claiming the keys' jobs while they are debounced
        start_pool("--concurrency", "1")
    folded: list[tuple[str, object]] = []  # (the job an enqueue returned, just after it)

    def produce(key: str) -> None:
        for i in range(20):
            job_id = enqueue("TEST_RECORD", {"i": i}, debounce=0.05, debounce_key=key,
                             debounce_mode="replace")
            folded.append((job_id, sql("SELECT clock_timestamp()")[0][0]))

    threads = [threading.Thread(target=produce, args=(f"key{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: count("status <> 'COMPLETED'") == 0, 60, "every job to run")
    started = dict(sql('SELECT id, "startedAt" FROM "WorkerJob"'))
    # Each enqueue's job was claimed after the enqueue returned: no change was lost.
    assert all(started[job_id] > after for job_id, after in folded)
    assert len(started) < len(folded)  # and enqueues were folded together


def test_batches_of_the_same_keys_in_opposite_orders_do_not_deadlock():
    from skiplock.queue_core.features.debounce import rounds

    keys = [("D", "b", False), ("D", "a", False), ("D", "b", True), ("D", "a", False)]
    assert rounds(keys) == [{False: [1, 0]}, {True: [2], False: [3]}]
    errors: list[BaseException] = []

    def batch(order: list[str]) -> None:
        try:
            for _ in range(20):
                enqueue_many([{"type": "D", "payload": {}, "debounce": "1m", "debounce_key": k}
                              for k in order])
        except BaseException as exc:  # noqa: BLE001 - the main thread reports it
            errors.append(exc)

    keys_ = [f"k{i}" for i in range(20)]
    threads = [threading.Thread(target=batch, args=(order,)) for order in (keys_, keys_[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and count() == 20
