"""Rate limits per window: tokens taken by starts and freed a period later, on a real
database, whichever producer writes the job and whichever path moves it."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import exc as sa_exc

from skiplock import cancel, claim, complete, enqueue, fail
from skiplock.cli import main
from skiplock.handlers import register_handler, unregister_handler
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import rates
from tests.queue_core.helpers import count, row, sql

WAITING = "status = 'PENDING' AND \"rateKey\" = :k AND NOT \"heldBack\""


def waiting(key: str) -> int:
    return count(WAITING, k=key)


def test_a_window_lets_in_count_jobs_and_a_start_frees_its_token_a_period_later():
    ids = [enqueue("RATED", {"n": i}, rate="3/2s", rate_key="api:1") for i in range(6)]
    other = enqueue("RATED", {"n": 9}, rate="3/2s", rate_key="api:2")
    assert row(ids[0]).rate == "3/2s" and waiting("api:1") == 3
    started = claim("w", limit=10)
    assert sorted(j.id for j in started) == sorted([*ids[:3], other])
    assert claim("w", limit=10) == []  # the fourth waits for the first token's time
    [next_in] = sql("""SELECT id, "availableAt" FROM "WorkerJob" WHERE "rateKey" = 'api:1'
                       AND status = 'PENDING' AND "heldBack" IS NULL""")
    first_start = min(row(j.id).startedAt for j in started if j.id in ids)
    assert next_in.id == ids[3] and next_in.availableAt >= first_start + timedelta(seconds=2)
    assert waiting("api:1") == 2  # one not due yet is let in, the rest stay out of the index


def test_concurrent_enqueues_of_one_key_let_in_exactly_the_window():
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        try:
            for i in range(n):
                enqueue("RATED", {"i": i}, rate="4/h", rate_key="k")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # An enqueue that found the key locked by another one left a note instead of
    # waiting; a master's maintenance takes it up.
    while rates.wake():
        pass
    assert (count("\"heldBack\" IS NULL"), waiting("k")) == (4, 36)
    assert len(claim("w", limit=50)) == 4
    # Every token is taken: the next job is let in at the first token's time, an hour on.
    [late] = sql("""SELECT "availableAt" - (SELECT min("startedAt") FROM "WorkerJob") AS after
                    FROM "WorkerJob" WHERE status = 'PENDING' AND "heldBack" IS NULL""")
    assert late.after >= timedelta(hours=1)
    assert claim("w", limit=50) == []


def test_a_row_written_by_sql_is_limited_and_its_rate_checked():
    for i in range(3):
        sql("""INSERT INTO "WorkerJob" (id, type, payload, status, priority, "availableAt",
               attempts, "maxAttempts", "createdAt", rate, "rateKey")
               VALUES (:id, 'RATED', '{}', 'PENDING', 0, now(), 0, 3, now(), '2/m', :k)""",
            id=f"sql{i}", k="prisma:1" if i < 2 else None)
    assert row("sql0").rate == "2/60s" and row("sql2").rateKey == "RATED"
    assert waiting("prisma:1") == 0 and len(claim("w", limit=10)) == 3
    with pytest.raises(sa_exc.DBAPIError, match="invalid rate '10 per minute'"):
        sql("""INSERT INTO "WorkerJob" (id, type, payload, status, priority, "availableAt",
               attempts, "maxAttempts", "createdAt", rate)
               VALUES ('bad', 'RATED', '{}', 'PENDING', 0, now(), 0, 3, now(),
                       '10 per minute')""")
    with pytest.raises(InvalidJob, match="rate must be"):
        enqueue("RATED", {}, rate="10/week")
    with pytest.raises(InvalidJob, match="needs a rate"):
        enqueue("RATED", {}, rate_key="k")
    assert count() == 3


def test_a_retry_takes_a_new_token_and_a_cancelled_job_gives_its_token_back():
    first, second = (enqueue("RATED", {}, rate="1/h", rate_key="k", max_attempts=3)
                     for _ in range(2))
    [job] = claim("w", limit=5)
    assert job.id == first
    assert fail(job, "boom", retry=True) == "PENDING"
    assert row(first).heldBack is False  # its next run is another start: it waits
    assert row(second).heldBack is None  # let in on the token the first start freed...
    assert row(second).availableAt >= row(first).startedAt + timedelta(hours=1)  # ...later
    assert claim("w", limit=5) == []
    assert cancel(second, by="t").outcome.value == "cancelled"
    # Its token comes back at its time, not earlier: the retry takes it then.
    assert row(first).heldBack is None
    assert row(first).availableAt >= row(second).availableAt


def test_a_rate_and_a_concurrency_limit_on_one_job_both_hold():
    ids = [enqueue("RATED", {}, rate="2/h", rate_key="u", concurrency_key="u", concurrency=1)
           for _ in range(4)]
    [a] = claim("w", limit=5)  # two tokens, one slot
    assert a.id == ids[0] and claim("w", limit=5) == []
    assert complete(a, None)
    [b] = claim("w", limit=5)  # the slot is free, and the second token
    assert b.id == ids[1] and complete(b, None)
    assert claim("w", limit=5) == []  # a slot, but no token for an hour
    assert waiting("u") == 1 and row(ids[2]).heldBack is None


def test_a_dependent_made_ready_by_its_parent_waits_for_its_window():
    blocker = enqueue("RATED", {}, rate="1/h", rate_key="k")
    parent = enqueue("PLAIN", {})
    child = enqueue("RATED", {}, rate="1/h", rate_key="k", depends_on=[parent])
    assert {j.id for j in claim("w", limit=5)} == {blocker, parent}
    assert complete_by_id(parent)
    # The resolver made it ready; the gate let it in only at the time of the next token.
    assert row(child).waitingFor == 0 and claim("w", limit=5) == []
    assert row(child).availableAt >= row(blocker).startedAt + timedelta(hours=1)


def complete_by_id(job_id: str) -> bool:
    return bool(sql("""UPDATE "WorkerJob" SET status = 'COMPLETED', "completedAt" = now()
                       WHERE id = :id RETURNING id""", id=job_id))


def test_a_registered_rate_keys_by_payload_field():
    register_handler("RATED_TYPE", lambda payload, job_id: None, rate="1/m", rate_key="userId")
    try:
        a = enqueue("RATED_TYPE", {"userId": 7})
        b = enqueue("RATED_TYPE", {"userId": 8})
        c, d = (enqueue("RATED_TYPE", {"userId": 7}) for _ in range(2))
        assert (row(a).rateKey, row(a).rate) == ("RATED_TYPE:7", "1/60s")
        assert {j.id for j in claim("w", limit=5)} == {a, b}
        assert (row(c).heldBack, row(d).heldBack) == (None, False)  # c at the next token
        [key] = rates.rate_keys()
        assert (key.key, key.rate, key.waiting, key.let_in, key.next_at) == (
            "RATED_TYPE:7", "1/60s", 1, 1, row(c).availableAt)
        assert rates.waiting_for_window() == 1
        shown = CliRunner().invoke(main, ["stats"], catch_exceptions=False).output
        assert "waiting for a rate window: 1 pending (biggest keys: RATED_TYPE:7 1/60s" in shown
    finally:
        unregister_handler("RATED_TYPE")


def test_cleanup_forgets_a_rate_key_only_once_its_window_is_over():
    enqueue("RATED", {}, rate="1/h", rate_key="k")
    [job] = claim("w", limit=1)
    assert complete(job, None)
    sql("""UPDATE "WorkerRateKey" SET "updatedAt" = now() - interval '2 hours'""")
    assert rates.prune_idle_keys(3600) == 0  # its start still counts for an hour
    sql("""UPDATE "WorkerRateKey" SET "freeAt" = '{}', "freeCount" = '{}'""")
    assert rates.prune_idle_keys(3600) == 1 and count() == 1
