"""Sequences (migration 0019), on a real database: the jobs of a key are claimable one at
a time in enqueue order; a failing job holds the rest, and once dead-lettered its policy
decides; cancel and delete never hold; rows written by plain SQL are sequenced too."""

from __future__ import annotations

import threading

import psycopg2
import pytest

import skiplock
from skiplock.handlers import register_handler, unregister_handler
from skiplock.queue_core import InvalidJob, claim, complete, enqueue, enqueue_many, fail, retry_dead
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.features.cancel import cancel
from skiplock.queue_core.features.sequences import (
    held_sequences,
    prune_idle_sequences,
    release_sequence,
)
from tests.queue_core.helpers import row, sql


def take(limit: int = 100) -> list[skiplock.Job]:
    return claim("w", limit=limit, types=["S"])


def ready() -> list[str]:
    """The payloads' `n` of the claimable jobs (each claim is given back at once)."""
    jobs = take()
    sql("""UPDATE "WorkerJob" SET status = 'PENDING', attempts = attempts - 1
           WHERE id = ANY(:ids)""", ids=[j.id for j in jobs])
    return sorted(j.payload["n"] for j in jobs)


def run_next() -> int:
    """Claim the one claimable job, complete it, return its `n`."""
    [job] = take()
    complete(job)
    return int(job.payload["n"])


def test_the_jobs_of_a_key_run_one_at_a_time_in_enqueue_order() -> None:
    for n in range(3):
        enqueue("S", {"n": n}, sequence="a")
    enqueue_many([{"type": "S", "payload": {"n": 10 + n}, "sequence": k}
                  for n, k in enumerate(["b", "a", "b"])])
    assert ready() == [0, 10]  # one per key: a's first, b's first
    order = []
    while take_one := take():
        for job in take_one:
            order.append(job.payload["n"])
            complete(job)
    assert [n for n in order if n in (0, 1, 2, 11)] == [0, 1, 2, 11]
    assert [n for n in order if n in (10, 12)] == [10, 12]
    # Both keys are free again, their counters kept; cleanup forgets idle ones.
    assert sql('SELECT key, "lastNo" FROM "WorkerSequence" ORDER BY 1') \
        == [("a", 4), ("b", 2)]
    assert prune_idle_sequences(0) == 2


def test_a_retrying_job_holds_its_key_and_runs_first_again() -> None:
    first = enqueue("S", {"n": 0}, sequence="a", max_attempts=3)
    enqueue("S", {"n": 1}, sequence="a")
    assert fail(take()[0], "boom", retry=True) == "PENDING"
    sql("""UPDATE "WorkerJob" SET "availableAt" = now() WHERE id = :id""", id=first)
    assert ready() == [0]  # the retry, not the next one
    assert run_next() == 0 and run_next() == 1


@pytest.mark.parametrize("policy", ["hold", "pass"])
def test_a_dead_letter_holds_or_passes_by_its_policy(policy: str) -> None:
    dead = enqueue("S", {"n": 0}, sequence="a", on_sequence_failure=policy)
    enqueue("S", {"n": 1}, sequence="a")
    enqueue("S", {"n": 2}, sequence="a")
    assert fail(take()[0], "boom", retry=False) == "DEAD_LETTER"
    if policy == "pass":
        assert ready() == [1] and held_sequences() == []
        return
    assert ready() == []
    [held] = held_sequences()
    assert (held.key, held.head, held.waiting) == ("a", dead, 2)
    # A person retries it: it runs first again, then the rest in order.
    assert retry_dead([dead]) == [dead]
    assert ready() == [0]
    assert [run_next(), run_next(), run_next()] == [0, 1, 2]


def test_a_held_key_goes_on_once_its_dead_letter_is_deleted_or_released() -> None:
    dead = enqueue("S", {"n": 0}, sequence="a")
    enqueue("S", {"n": 1}, sequence="a")
    enqueue("S", {"n": 2}, sequence="a")
    fail(take()[0], "boom", retry=False)
    sql('DELETE FROM "WorkerJob" WHERE id = :id', id=dead)
    assert run_next() == 1 and run_next() == 2
    dead2 = enqueue("S", {"n": 3}, sequence="b")
    after = enqueue("S", {"n": 4}, sequence="b")
    fail(take()[0], "boom", retry=False)
    assert release_sequence("b") == after
    assert row(dead2).st == "DEAD_LETTER"  # released, not undone
    with pytest.raises(InvalidJob, match="not held"):
        release_sequence("b")
    assert ready() == [4]


def test_cancel_never_holds_and_a_cancelled_waiting_job_keeps_the_order() -> None:
    head = enqueue("S", {"n": 0}, sequence="a")
    middle = enqueue("S", {"n": 1}, sequence="a")
    enqueue("S", {"n": 2}, sequence="a")
    cancel(middle)
    assert ready() == [0]  # the third still waits for the head, not for the cancelled one
    cancel(head)
    assert ready() == [2]


def test_a_job_that_passed_its_key_and_is_retried_joins_the_back_of_the_line() -> None:
    dead = enqueue("S", {"n": 0}, sequence="a", on_sequence_failure="pass")
    enqueue("S", {"n": 1}, sequence="a")
    fail(take()[0], "boom", retry=False)
    retry_dead([dead])
    assert ready() == [1]
    assert run_next() == 1 and run_next() == 0


def test_rows_written_by_plain_sql_are_sequenced(database_url: str) -> None:
    conn = psycopg2.connect(libpq_dsn(database_url))
    try:
        with conn, conn.cursor() as cur:  # as psql or a Prisma client writes them
            for n, policy in enumerate(["pass", None, None]):
                cur.execute("""INSERT INTO "WorkerJob" (id, type, payload, "sequenceKey",
                               "sequencePolicy") VALUES (%s, 'S', %s, 'acct:7', %s)""",
                            (f"sql{n}", f'{{"n": {n}}}', policy))
    finally:
        conn.close()
    assert ready() == [0]
    fail(take()[0], "boom", retry=False)  # "pass" on its own row: the next goes on
    assert run_next() == 1 and run_next() == 2


def test_concurrent_enqueues_of_one_key_are_ordered_by_their_commits(database_url: str) -> None:
    """The second transaction waits for the first's commit, and comes after it."""
    first = psycopg2.connect(libpq_dsn(database_url))
    second_done = threading.Event()

    def second() -> None:
        enqueue("S", {"n": 1}, sequence="a")
        second_done.set()

    try:
        with first.cursor() as cur:
            cur.execute("""INSERT INTO "WorkerJob" (id, type, payload, "sequenceKey")
                           VALUES ('x0', 'S', '{"n": 0}', 'a')""")
            other = threading.Thread(target=second)
            other.start()
            assert not second_done.wait(0.5)  # held by the key's lock
            first.commit()
        other.join(10)
        assert second_done.is_set()
    finally:
        first.close()
    assert run_next() == 0 and run_next() == 1


def test_a_job_in_a_sequence_also_waits_for_its_parents() -> None:
    parent = enqueue("P", {})
    enqueue("S", {"n": 0}, sequence="a")
    second = enqueue("S", {"n": 1}, sequence="a", depends_on=[parent])
    assert row(second).waitingFor == 2  # its parent, and its turn
    assert run_next() == 0
    assert ready() == []  # its turn came; its parent has not ended
    complete(claim("w", types=["P"])[0])
    assert run_next() == 1


def test_a_handlers_sequence_key_applies_to_its_jobs() -> None:
    register_handler("S", lambda p, j: None,  # type: ignore[arg-type, return-value]
                     sequence_key="account", on_sequence_failure="pass")
    try:
        job = enqueue("S", {"n": 0, "account": 7})
        assert (row(job).sequenceKey, row(job).sequencePolicy) == ("S:7", "pass")
        assert row(enqueue("S", {"n": 1})).sequenceKey is None  # no field: no sequence
    finally:
        unregister_handler("S")


@pytest.mark.parametrize("options, message", [
    ({"sequence": ""}, "sequence must be a non-empty string"),
    ({"sequence": "a", "on_sequence_failure": "skip"}, "must be one of hold, pass"),
    ({"on_sequence_failure": "pass"}, "goes with a sequence"),
])
def test_bad_sequence_options_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        enqueue("S", {"n": 0}, **options)  # type: ignore[arg-type]
    assert sql('SELECT count(*) FROM "WorkerJob"')[0][0] == 0


def test_stats_and_the_cli_show_and_release_a_held_sequence() -> None:
    from click.testing import CliRunner

    from skiplock.cli import main
    from skiplock.queue_core import config

    dead = enqueue("S", {"n": 0}, sequence="acct:9")
    nxt = enqueue("S", {"n": 1}, sequence="acct:9")
    enqueue("S", {"n": 2}, sequence="acct:9")
    fail(take()[0], "boom", retry=False)
    config.clear_cache()
    runner = CliRunner()
    out = runner.invoke(main, ["stats"], catch_exceptions=False).output
    assert "sequences: 1 keys with jobs in line, 2 jobs waiting for their turn" in out
    assert f"acct:9 (job {dead}, 2 waiting)" in out
    data = runner.invoke(main, ["stats", "--json"], catch_exceptions=False).output
    assert '"held": 1' in data and '"waiting": 2' in data
    from skiplock.pool.metrics import read_queue

    metrics = read_queue()
    assert (metrics["sequences_held"], metrics["sequence_waiting"]) == (1, 2)
    released = runner.invoke(main, ["sequence", "release", "acct:9"], catch_exceptions=False)
    assert f"job {nxt} runs next" in released.output
    again = runner.invoke(main, ["sequence", "release", "acct:9"])
    assert again.exit_code == 1 and "not held" in again.output
    assert "no sequence is held" in runner.invoke(main, ["sequence", "held"]).output


def test_an_enqueue_skipped_for_its_idempotency_key_leaves_no_phantom_in_line() -> None:
    first = enqueue("S", {"n": 0}, sequence="a", idempotency_key="once")
    assert run_next() == 0
    # The key is free: the skipped insert's trigger made its row the head, which the
    # table never got; the next enqueue sees no such job and takes its place.
    assert enqueue("S", {"n": 1}, sequence="a", idempotency_key="once") == first
    enqueue("S", {"n": 2}, sequence="a")
    assert ready() == [2]
