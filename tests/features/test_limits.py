"""Concurrency limits per key: slots taken and given back by every path that starts or
ends a job, on a real database."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, text

from skiplock import cancel, cancel_matching, claim, complete, enqueue, enqueue_many, fail
from skiplock.handlers import JobResult, register_handler, unregister_handler
from skiplock.queue_core import release, retry_dead
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.recovery import recover_stuck
from tests.queue_core.helpers import age_lock, count, row, sql


@contextlib.contextmanager
def db_session_replica() -> Iterator[Connection]:
    """A transaction with the table's triggers off, as a bulk load or a replica applies rows."""
    from skiplock.queue_core.database import db

    with db.get_engine().begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn


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
    assert fail(third, "boom", retry=True) == "PENDING"  # waiting for its retry...
    assert (slots("user:1"), held_back("user:1")) == (2, 2)
    assert (row(third.id).heldBack, row(ids[3]).heldBack) == (True, None)  # ...a ready one runs
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
    assert read_queue()["held"]["slot"] == 2  # skiplock_queue_held_jobs{reason="slot"}
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


# -- slots stay right whatever path changes a job, and a recount repairs them --------------

def holders(key: str) -> list[str]:
    return [r.id for r in sql("""SELECT id FROM "WorkerJob" WHERE "concurrencyKey" = :k
                                 AND status IN ('PENDING', 'PROCESSING') AND "heldBack" IS NULL
                                 ORDER BY id""", k=key)]


def counted_right() -> dict[str, tuple[int, int]]:
    """Each key's (recorded, actual) slot counts where they differ: {} when all are right."""
    rows = sql("""SELECT k.key, k.active, (SELECT count(*) FROM "WorkerJob" j
                                           WHERE j."concurrencyKey" = k.key
                                             AND j.status IN ('PENDING', 'PROCESSING')
                                             AND j."heldBack" IS NULL) AS n
                  FROM "WorkerConcurrencyKey" k""")
    return {r.key: (r.active, r.n) for r in rows if r.active != r.n}


def test_a_truncate_of_the_job_table_leaves_no_slot_taken():
    keyed(3, limit=1)
    sql('TRUNCATE "WorkerJob"')
    assert slots("user:1") == 0
    [fresh] = keyed(1, limit=1)
    assert row(fresh).heldBack is None  # let in: no slot held by a job that is gone


def test_changing_a_jobs_key_moves_its_slot_to_the_new_key():
    a, b = keyed(2, key="k1", limit=1)
    [c] = keyed(1, key="k2", limit=1)
    sql("""UPDATE "WorkerJob" SET "concurrencyKey" = 'k2' WHERE id = :id""", id=a)
    assert holders("k1") == [b]  # k1's slot went with a: its waiting job is let in
    # k2 is over its limit: of its pending jobs, the one due last (c) waits again
    assert holders("k2") == [a] and row(c).heldBack is True
    assert counted_right() == {}
    sql("""UPDATE "WorkerJob" SET "concurrencyKey" = NULL WHERE id = :id""", id=a)
    assert holders("k2") == [c] and counted_right() == {}


def test_holding_back_or_letting_in_by_hand_keeps_counts_and_limits():
    a, b, c = keyed(3, limit=2)
    sql("""UPDATE "WorkerJob" SET "heldBack" = NULL WHERE id = :id""", id=c)  # over the limit
    assert len(holders("user:1")) == 2 and counted_right() == {}
    [held] = [i for i in (a, b, c) if i not in holders("user:1")]
    sql("""UPDATE "WorkerJob" SET "heldBack" = true WHERE id <> :id""", id=held)
    assert len(holders("user:1")) == 2 and counted_right() == {}  # the slots are filled again


def test_a_recount_repairs_counts_that_bypassed_the_triggers():
    from skiplock.queue_core.features.limits import recount_slots

    keyed(3, key="a", limit=2)
    keyed(2, key="b", limit=1)
    assert recount_slots() == 0  # nothing to repair
    sql("""UPDATE "WorkerConcurrencyKey" SET active = 7 WHERE key = 'a'""")
    sql("""DELETE FROM "WorkerConcurrencyKey" WHERE key = 'b'""")
    with db_session_replica() as conn:  # a bulk load with triggers off
        conn.execute(text("""UPDATE "WorkerJob" SET "heldBack" = NULL
                             WHERE "concurrencyKey" = 'b'"""))
    assert recount_slots() == 2
    assert counted_right() == {} and slots("a") == 2 and slots("b") == 1
    assert len(holders("b")) == 1  # over its limit after the bypass: back to it
    [done] = claim("w", limit=10, types=["LIMITED"])[:1]
    assert complete(done, None) and counted_right() == {}


def test_cleanup_and_the_command_line_recount_slots():
    from click.testing import CliRunner

    from skiplock.cli import main
    from skiplock.queue_core import cleanup, config

    ids = keyed(2, key="c", limit=1)
    sql("""UPDATE "WorkerConcurrencyKey" SET active = 1 + 1""")  # a leak: nobody gets in
    sql("""DELETE FROM "WorkerJob" WHERE id = :id""", id=ids[0])
    assert row(ids[1]).heldBack is True
    cleanup("7d")
    assert row(ids[1]).heldBack is None and counted_right() == {}
    sql("""UPDATE "WorkerConcurrencyKey" SET active = 0""")
    config.clear_cache()
    result = CliRunner().invoke(main, ["recount-slots"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "1 concurrency key" in result.output and counted_right() == {}


# -- a job that is not due does not keep a ready job of its key waiting ----------------------

def test_a_delayed_job_does_not_hold_its_keys_slot_from_a_ready_one():
    [later] = keyed(1, limit=1, delay=3600)
    [ready] = keyed(1, limit=1)
    [job] = claim("w", limit=10)
    assert job.id == ready and row(later).heldBack is True
    assert complete(job, None)
    assert row(later).heldBack is None and slots("user:1") == 1  # its turn, when it is due
    assert claim("w", limit=10) == []


def test_of_two_delayed_jobs_the_one_due_first_holds_the_slot():
    [in_an_hour] = keyed(1, limit=1, delay=3600)
    [in_a_minute] = keyed(1, limit=1, delay=60)
    assert holders("user:1") == [in_a_minute] and row(in_an_hour).heldBack is True
    sql("""UPDATE "WorkerJob" SET "availableAt" = now() WHERE id = :id""", id=in_an_hour)
    assert holders("user:1") == [in_an_hour]  # made due (run now): it goes first
    assert counted_right() == {}


def test_a_job_waiting_for_its_retry_lets_a_ready_job_of_its_key_run():
    first, second = keyed(2, limit=1)
    [job] = claim("w")
    assert job.id == first
    assert fail(job, "boom", retry=True) == "PENDING"  # backing off for 10 s
    assert holders("user:1") == [second] and row(first).heldBack is True
    [job] = claim("w")
    assert job.id == second and complete(job, None)
    assert holders("user:1") == [first] and counted_right() == {}


def test_the_downgrade_puts_back_the_triggers_of_0005_and_the_upgrade_rebalances():
    from alembic import command

    from skiplock.queue_core.database import direct, migrate
    from skiplock.queue_core.database.urls import database_url
    from skiplock.queue_core.features import history
    from tests.queue_core.helpers import schema_of

    url = database_url()
    # The history partitions earlier tests made, made again after the upgrade (which
    # makes today's and the next): the schema compared is the same.
    partitions = [p.lower for p in history.partitions()]
    before = schema_of(url)
    config = migrate.alembic_config(url)
    command.downgrade(config, "0012_routing")
    direct.close()
    # Today's statements use columns of later revisions: the claim reads the
    # checkpoint (0014_checkpoints), the enqueue writes the trace context (0015).
    sql('ALTER TABLE "WorkerJob" ADD COLUMN checkpoint jsonb, ADD COLUMN "traceContext" jsonb')
    # and name the live part and the history (0022_history): the table is both here.
    sql('CREATE VIEW "WorkerJobLive" AS SELECT * FROM "WorkerJob"')
    sql('CREATE VIEW "WorkerJobHistory" AS SELECT * FROM "WorkerJob" WHERE false')
    try:
        [first, second] = keyed(2, limit=1)
        [job] = claim("w")
        assert complete(job, None)  # 0005's triggers, as they were
        assert holders("user:1") == [second] and counted_right() == {}
        [later] = keyed(1, key="k", limit=1, delay=3600)
        [ready] = keyed(1, key="k", limit=1)
        assert holders("k") == [later]  # as it was: the delayed job took the slot
    finally:
        sql('DROP VIEW "WorkerJobLive", "WorkerJobHistory"')
        sql('ALTER TABLE "WorkerJob" DROP COLUMN checkpoint, DROP COLUMN "traceContext"')
        command.upgrade(config, "skiplock@head")
        direct.close()
        for lower in partitions:
            sql("SELECT skiplock_history_partition(:at)", at=lower)
    assert holders("k") == [ready] and counted_right() == {}  # the upgrade recounts
    assert schema_of(url) == before  # functions included


def test_delays_retries_and_enqueues_racing_claims_keep_the_limit_and_the_counts():
    import random

    from skiplock.queue_core.database import db

    register_handler("STRESSED", lambda p, j: JobResult(True), backoff=[0.05])
    rng = random.Random(7)
    worst = [0]
    errors: list[BaseException] = []

    def enqueuer() -> None:
        try:
            for i in range(60):
                enqueue("STRESSED", {"i": i}, concurrency_key="hot", concurrency=2,
                        delay=rng.choice([0, 0, 0.05, 0.2]), max_attempts=3)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    def work(name: str) -> None:
        chance = random.Random(name)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                jobs = claim(name, limit=2)
                if not jobs:
                    if not feeding.is_alive() and count("status IN ('PENDING', 'PROCESSING')") == 0:
                        return
                    time.sleep(0.005)
                    continue
                running = count("\"concurrencyKey\" = 'hot' AND status = 'PROCESSING'")
                worst[0] = max(worst[0], running)
                for job in jobs:
                    if chance.random() < 0.3:
                        fail(job, "flaky", retry=True)
                    else:
                        complete(job, None)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    try:
        db.get_engine()
        feeding = threading.Thread(target=enqueuer)
        feeding.start()
        threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(5)]
        for t in threads:
            t.start()
        for t in [feeding, *threads]:
            t.join(90)
    finally:
        unregister_handler("STRESSED")
    assert not errors, errors
    assert count("status IN ('COMPLETED', 'DEAD_LETTER')") == 60
    assert 1 <= worst[0] <= 2
    assert slots("hot") == 0 and counted_right() == {}


def test_jobs_deleted_with_their_user_by_a_cascading_foreign_key_free_their_slots(
        user_foreign_key):
    [(user,)] = sql("""INSERT INTO "User" (timezone) VALUES ('UTC') RETURNING id""")
    mine = [enqueue("LIMITED", {}, concurrency_key="shared", concurrency=2, user_id=user)
            for _ in range(2)]
    [other] = keyed(1, key="shared", limit=2)
    assert row(other).heldBack is True and sorted(holders("shared")) == sorted(mine)
    sql('DELETE FROM "User" WHERE id = :u', u=user)  # the cascade deletes inside a trigger
    assert holders("shared") == [other] and counted_right() == {}
