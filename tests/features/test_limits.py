"""Concurrency limits per key: slots taken and given back by every path that starts or
ends a job, on a real database."""

from __future__ import annotations

import threading
import time

import pytest

from skiplock import cancel, cancel_matching, claim, complete, enqueue, enqueue_many, fail
from skiplock.handlers import JobResult, register_handler, unregister_handler
from skiplock.queue_core import release, retry_dead
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.recovery import recover_stuck
from tests.queue_core.helpers import age_lock, count, row, sql


def slots(key: str) -> int:
    rows = sql('SELECT active FROM "WorkerConcurrencyKey" WHERE key = :k', k=key)
    return int(rows[0][0]) if rows else 0


def held_back(key: str) -> int:
    return count('"concurrencyKey" = :k AND status = \'PENDING\' AND "heldBack"', k=key)


def keyed(n: int, key: str = "user:1", limit: int = 2, **options) -> list[str]:
    return [enqueue("LIMITED", {"n": i}, concurrency_key=key, concurrency=limit, **options)
            for i in range(n)]


def test_only_limit_jobs_of_a_key_are_let_in_and_each_end_lets_the_next_one_in():
    ids = keyed(5)
    assert (slots("user:1"), held_back("user:1")) == (2, 3)
    jobs = claim("w", limit=10)
    assert [j.id for j in jobs] == ids[:2]  # the claim never sees held-back jobs
    assert claim("w", limit=10) == []
    assert complete(jobs[0], None)
    [third] = claim("w", limit=10)
    assert third.id == ids[2] and held_back("user:1") == 2
    assert fail(third, "boom", retry=True) == "PENDING"  # waiting for its retry: keeps its slot
    assert (slots("user:1"), held_back("user:1")) == (2, 2)
    assert fail(jobs[1], "fatal", retry=False) == "DEAD_LETTER"
    assert (slots("user:1"), held_back("user:1")) == (2, 1)
    assert list(retry_dead([jobs[1].id])) == [jobs[1].id]
    assert row(jobs[1].id).heldBack is True  # back from the dead: waits for a slot
    assert (slots("user:1"), held_back("user:1")) == (2, 2)


def test_cancel_release_recovery_and_delete_move_slots_the_same_way():
    ids = keyed(4, max_attempts=5)
    assert cancel(ids[3], by="t").outcome.value == "cancelled"  # held back: no slot to free
    assert (slots("user:1"), held_back("user:1")) == (2, 1)
    assert cancel(ids[0], by="t").outcome.value == "cancelled"  # had a slot: the next gets it
    assert (slots("user:1"), held_back("user:1")) == (2, 0)
    [a, b] = claim("w", limit=10)
    assert release(a, "shutdown")  # back to PENDING with its slot
    age_lock(b.id, 3600)
    recover_stuck(60)  # rescued: PENDING again, still holding its slot
    assert slots("user:1") == 2 and count("status = 'PENDING' AND \"heldBack\" IS NULL") == 2
    more = keyed(1)
    assert held_back("user:1") == 1
    sql('DELETE FROM "WorkerJob" WHERE id = :id', id=a.id)
    assert row(more[0]).heldBack is None and slots("user:1") == 2


def test_the_slot_is_given_back_only_when_the_ending_transaction_commits():
    from skiplock.queue_core.database import db

    ids = keyed(2, limit=1)
    [job] = claim("w")
    with db.get_engine().connect() as conn:
        trans = conn.begin()
        assert complete(job, None, conn=conn)
        trans.rollback()
    assert row(job.id).st == "PROCESSING" and row(ids[1]).heldBack is True
    assert complete(job, None)
    assert row(ids[1]).heldBack is None


def test_keys_default_from_the_registered_type_and_need_a_limit():
    register_handler("LIMITED_BY_USER", lambda p, j: JobResult(True), concurrency=1,
                     concurrency_key="userId")
    try:
        a = enqueue("LIMITED_BY_USER", {"userId": "u1"})
        b = enqueue("LIMITED_BY_USER", {"userId": "u1"})
        c = enqueue("LIMITED_BY_USER", {"userId": "u2"})
        d = enqueue("LIMITED_BY_USER", {})  # no field: not limited
        assert row(a).concurrencyKey == "LIMITED_BY_USER:u1" and row(a).concurrencyLimit == 1
        assert [row(i).heldBack for i in (a, b, c, d)] == [None, True, None, None]
        assert row(d).concurrencyKey is None
        e = enqueue("LIMITED_BY_USER", {}, concurrency_key="shared")  # the type's limit
        assert row(e).concurrencyLimit == 1
    finally:
        unregister_handler("LIMITED_BY_USER")
    with pytest.raises(InvalidJob, match="needs a limit"):
        enqueue("UNLIMITED", {}, concurrency_key="k")
    with pytest.raises(InvalidJob, match="needs a concurrency_key"):
        enqueue("UNLIMITED", {}, concurrency=2)
    with pytest.raises(InvalidJob, match="between 1 and"):
        enqueue("UNLIMITED", {}, concurrency_key="k", concurrency=0)


def test_detect_patterns_runs_one_at_a_time_per_user_by_default():
    from skiplock.queue_core import enqueue_detect_patterns

    first = enqueue_detect_patterns({"userId": "u7", "triggerEventId": "e1",
                                     "interpretationId": "i1"})
    second = enqueue_detect_patterns({"userId": "u7", "triggerEventId": "e2",
                                      "interpretationId": "i2"})
    assert row(first).concurrencyKey == "DETECT_PATTERNS:u7"
    assert (row(first).heldBack, row(second).heldBack) == (None, True)


def test_concurrent_claimers_never_run_more_than_the_limit_of_one_key():
    from skiplock.queue_core.database import db

    keyed(60, key="hot", limit=3)
    keyed(20, key="other", limit=3)
    worst = [0]
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            while True:
                jobs = claim(name, limit=2)
                if not jobs:
                    if count("status = 'PENDING'") == 0:
                        return
                    time.sleep(0.005)
                    continue
                running = count("\"concurrencyKey\" = 'hot' AND status = 'PROCESSING'")
                worst[0] = max(worst[0], running)
                for job in jobs:
                    complete(job, None)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    db.get_engine()
    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert count("status = 'COMPLETED'") == 80
    assert 1 <= worst[0] <= 3
    assert slots("hot") == 0 and slots("other") == 0


def test_a_backlog_of_one_key_does_not_hold_back_another_key():
    enqueue_many([{"type": "LIMITED", "payload": {"n": i}, "concurrency_key": "user:big",
                   "concurrency": 2} for i in range(5000)])
    small = enqueue("LIMITED", {}, concurrency_key="user:small", concurrency=2)
    first = claim("w", limit=2)
    assert {j.concurrency_key for j in first} == {"user:big"}
    [next_job] = claim("w", limit=5)
    assert next_job.id == small


def test_one_statement_that_ends_many_jobs_of_a_key_lets_none_of_them_in():
    ids = [enqueue("LIMITED", {"n": i}, concurrency_key="user:5", concurrency=2, user_id="u5")
           for i in range(6)]
    other = keyed(1, key="user:5")  # same key, another user: stays, and gets a slot
    results = cancel_matching(user_id="u5", by="t")
    assert {r.job_id for r in results} == set(ids)
    assert count("status = 'FAILED'") == 6
    assert row(other[0]).heldBack is None and slots("user:5") == 1


def test_the_command_line_and_the_metrics_see_limits():
    from click.testing import CliRunner

    from skiplock.cli import main
    from skiplock.pool.metrics import read_queue
    from skiplock.queue_core import config

    def cli(*args: str) -> str:
        config.clear_cache()
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    ids = [cli("enqueue", "LIMITED", "{}", "--any-type", "--concurrency-key", "cli:1",
               "--concurrency", "1").strip() for _ in range(3)]
    assert [row(i).heldBack for i in ids] == [None, True, True]
    assert read_queue()["held_back"] == 2
    shown = cli("job", ids[1])
    assert "concurrencyKey" in shown and "heldBack" in shown
    plain = enqueue("PLAIN", {})
    assert "concurrencyKey" not in cli("job", plain)  # unset feature columns stay out of sight


def test_cleanup_forgets_keys_nobody_holds_or_waits_for():
    from skiplock.queue_core import cleanup
    from skiplock.queue_core.features.limits import prune_idle_keys

    [done] = keyed(1, key="gone")
    keyed(2, key="busy", limit=1)  # one holds the slot, one waits
    [job] = [j for j in claim("w", limit=5) if j.id == done]
    complete(job, None)
    sql('UPDATE "WorkerConcurrencyKey" SET "updatedAt" = now() - interval \'2 hours\'')
    assert prune_idle_keys(3600) == 1
    assert slots("busy") == 1 and sql('SELECT key FROM "WorkerConcurrencyKey"') == [("busy",)]
    assert cleanup("7d") == 0  # and cleanup runs it
