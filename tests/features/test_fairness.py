"""Fairness between keys: each key's window in the claim's index, its jobs let in as
they leave, at the back of the queue, and the window of a key alone grown, on a real
database."""

from __future__ import annotations

import pytest

from skiplock import cancel, claim, enqueue, enqueue_many, fail, set_weight
from skiplock.handlers import JobResult, register_handler, unregister_handler
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import fairness
from tests.queue_core.helpers import count, row, sql

WINDOW = fairness.DEFAULT_WINDOW


def admitted(key: str) -> int:
    return count('"fairKey" = :k AND status = \'PENDING\' AND "heldBack" IS NULL', k=key)


def waiting(key: str) -> int:
    return count(f'"fairKey" = :k AND {fairness_waiting()}', k=key)


def fairness_waiting() -> str:
    from skiplock.queue_core import sql as statements

    return statements.WAITING_TURN


def fair(n: int, key: str, job_type: str = "FAIR", **options) -> list[str]:
    return enqueue_many([{"type": job_type, "payload": {"n": i}, "fair_key": key, **options}
                         for i in range(n)])


def test_a_key_keeps_its_window_in_the_index_and_each_claim_lets_its_next_job_in():
    ids = fair(WINDOW + 5, "user:1")
    assert (admitted("user:1"), waiting("user:1")) == (WINDOW, 5)
    fair(WINDOW + 1, "user:2")  # another key waits its turn: the windows bind
    first = {i for i in ids if row(i).heldBack is None}
    jobs = claim("w", limit=3)
    assert {j.id for j in jobs} <= first  # the claim never sees the jobs waiting their turn
    assert (admitted("user:1"), waiting("user:1")) == (WINDOW, 2)
    let_in = [r for r in map(row, ids) if r.id not in first and r.heldBack is None]
    # Their turn dates them: at the back of the queue, behind what was there before.
    assert len(let_in) == 3 and all(r.availableAt == row(jobs[0].id).startedAt for r in let_in)
    assert min(r.availableAt for r in let_in) > max(row(i).availableAt for i in first)


def test_keys_take_turns_in_proportion_to_their_weights():
    set_weight("heavy", 3)
    fair(100, "light")
    fair(200, "heavy")
    order = [row(j.id).fairKey for _ in range(80) for j in claim("w", limit=1)]
    # A round is the light key's window and three of the heavy key's.
    assert order.count("light") == 20 and order.count("heavy") == 60
    assert order[:WINDOW] == ["light"] * WINDOW


def test_a_light_keys_job_waits_for_the_windows_ahead_of_it_not_the_backlog():
    fair(500, "backfill")
    [light] = fair(1, "user:7")
    started = [j.id for _ in range(WINDOW + 1) for j in claim("w", limit=1)]
    assert light in started


def test_every_path_back_into_the_index_passes_the_gate():
    ids = fair(WINDOW, "k", max_attempts=3)
    [job] = claim("w", limit=1)
    assert admitted("k") == WINDOW - 1
    fair(1, "k")  # takes the place the claim freed
    assert fail(job, "boom", retry=True) == "PENDING"  # the window is full: it waits its turn
    assert row(job.id).heldBack is False and waiting("k") == 1
    # A row written by another producer (psql, Prisma, another language) too.
    sql("""INSERT INTO "WorkerJob" (id, type, payload, "fairKey")
           VALUES ('by-hand', 'FAIR', '{}', 'k')""")
    assert row("by-hand").heldBack is False and admitted("k") == WINDOW
    # A job that leaves by cancel or delete lets the next one in, the best first.
    assert cancel(ids[1], by="t").outcome.value == "cancelled"
    sql('DELETE FROM "WorkerJob" WHERE id = :id', id=ids[2])
    assert admitted("k") == WINDOW and waiting("k") == 0
    assert {row(job.id).heldBack, row("by-hand").heldBack} == {None}


def test_a_weight_widens_the_window_at_once_and_the_sweep_repairs_what_bypassed_it():
    fair(3 * WINDOW, "k")
    fair(WINDOW + 1, "other", job_type="OTHER")  # a key waiting: k's window does not grow
    assert set_weight("k", 2) == WINDOW and admitted("k") == 2 * WINDOW
    set_weight("k", None)  # back to 1: the window shrinks at once
    assert (admitted("k"), waiting("k")) == (WINDOW, 2 * WINDOW)
    assert len(claim("w", limit=WINDOW + 1, types=["FAIR"])) == WINDOW  # each replaced
    assert (admitted("k"), waiting("k")) == (WINDOW, WINDOW)
    sql('UPDATE "WorkerJob" SET "heldBack" = NULL WHERE "fairKey" = \'k\'')  # all gated
    assert admitted("k") == WINDOW
    with sql_replica() as conn:  # triggers off: a key left with room and jobs waiting
        conn.exec_driver_sql("""UPDATE "WorkerJob" SET "heldBack" = false
                                WHERE "fairKey" = 'k' AND "heldBack" IS NULL""")
    assert admitted("k") == 0
    assert fairness.fill_turns() == WINDOW and admitted("k") == WINDOW
    assert [(k.key, k.weight, k.window, k.admitted, k.waiting) for k in fairness.fair_keys()] \
        == [("k", 1, WINDOW, WINDOW, WINDOW), ("other", 1, WINDOW, WINDOW, 1)]


def test_a_key_alone_grows_its_window_and_is_held_to_it_again_when_another_waits():
    grown = fairness.GROWTH * WINDOW
    fair(grown + 100, "alone")
    claim("w", limit=1)  # nobody else waits: the window grows, in one UPDATE
    assert (admitted("alone"), waiting("alone")) == (grown, 99)
    assert len(claim("w", limit=50)) == 50 and admitted("alone") == grown  # replaced
    fair(WINDOW + 1, "newcomer")  # another key waits: the grown window is not refilled
    ahead = [row(j.id).fairKey for j in claim("w", limit=grown + WINDOW)]
    # The newcomer's jobs waited for the grown window, no more; then "alone" is held to
    # its window again (its departures let in no more than that).
    assert ahead == ["alone"] * grown + ["newcomer"] * WINDOW
    assert (admitted("alone"), admitted("newcomer"), waiting("newcomer")) == (WINDOW, 1, 0)


def sql_replica():
    from tests.features.test_limits import db_session_replica

    return db_session_replica()


def test_the_key_comes_from_the_registered_type_and_bad_input_is_refused():
    register_handler("FAIR_BY_USER", lambda p, j: JobResult(True), fair_key="userId")
    try:
        a = enqueue("FAIR_BY_USER", {"userId": "u1"})
        b = enqueue("FAIR_BY_USER", {})  # no field: no fairness
        c = enqueue("FAIR_BY_USER", {"userId": "u1"}, fair_key="mine")
        assert (row(a).fairKey, row(b).fairKey, row(c).fairKey) == ("FAIR_BY_USER:u1", None,
                                                                    "mine")
    finally:
        unregister_handler("FAIR_BY_USER")
    with pytest.raises(InvalidJob, match="both a fair key"):
        enqueue("FAIR", {}, fair_key="k", concurrency_key="k", concurrency=1)
    with pytest.raises(InvalidJob, match="fair key must be"):
        enqueue("FAIR", {}, fair_key="")
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(InvalidJob, match="weight must be"):
            set_weight("k", bad)
    assert count() == 3 and sql('SELECT count(*) FROM "WorkerFairKey"')[0][0] == 0


def test_stats_the_cli_and_the_metrics_show_fair_keys_and_jobs_waiting_their_turn():
    import json

    from click.testing import CliRunner

    from skiplock.cli import main
    from skiplock.pool.metrics import read_queue

    fair(WINDOW + 4, "tenant:1")
    runner = CliRunner()
    assert runner.invoke(main, ["weight", "tenant:1", "2"]).output == \
        "tenant:1: weight 2, 4 more jobs let in\n"
    assert runner.invoke(main, ["weight", "tenant:1"]).output == \
        f"tenant:1: weight 2, {WINDOW + 4}/{2 * WINDOW} in the queue, 0 waiting their turn\n"
    assert runner.invoke(main, ["weight", "tenant:1", "--reset"]).exit_code == 0
    claim("w", limit=5)  # a window of 10 again: 9 left in the queue, and room for one
    fair(3, "tenant:1")
    out = runner.invoke(main, ["stats"], catch_exceptions=False).output
    assert (f"waiting their key's turn (fairness): 2 pending (keys: tenant:1 weight 1, "
            f"{WINDOW}/{WINDOW} in the queue, 2 waiting)") in out
    data = json.loads(runner.invoke(main, ["stats", "--json"]).output)
    assert data["fairWaiting"] == 2 and data["fairKeys"]["tenant:1"]["waiting"] == 2
    assert read_queue()["fair_waiting"] == 2


def test_a_dependent_of_a_fair_key_waits_for_its_parent_then_for_its_turn():
    from skiplock import complete

    parent = enqueue("PARENT", {})
    [child] = enqueue_many([{"type": "FAIR", "payload": {}, "fair_key": "k",
                             "depends_on": [parent]}])
    fair(WINDOW, "k")
    assert row(child).heldBack is False and row(child).waitingFor == 1 and waiting("k") == 0
    [job] = claim("w", limit=1)  # the oldest: the parent
    assert job.id == parent
    assert complete(job, None)  # its parent is done: now it waits for its key's turn
    assert (row(child).heldBack, row(child).waitingFor, waiting("k")) == (False, 0, 1)
    assert [j.id for j in claim("w", limit=1)] != [child]
    assert row(child).heldBack is None  # the claim of one of its key's jobs let it in
