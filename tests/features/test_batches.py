"""Batches on a real database: one callback, exactly once, when the last member ended,
whichever session ends it; the counts; a re-run of the fan-out that writes nothing twice."""

from __future__ import annotations

import threading

import psycopg2
import pytest

import skiplock
from skiplock.queue_core import InvalidJob, claim, complete, enqueue, fail
from skiplock.queue_core.database import db
from skiplock.queue_core.database.urls import libpq_dsn
from tests.queue_core.helpers import count, row


def take(job_type: str, limit: int = 100) -> list[skiplock.Job]:
    return claim("w", limit=limit, types=[job_type])


def test_the_callback_runs_once_the_last_member_ended_with_the_counts() -> None:
    with skiplock.batch(on_complete=("DONE", {"report": "r1"}),
                        on_failure=("SOME_FAILED", {"report": "r1"})) as b:
        for i in range(4):
            enqueue("M", {"i": i})
        # Nothing is visible before the block ends: members and callback commit together.
        assert take("M") == []
    assert b.id.startswith("batch-") and b.callback_id is not None
    assert list(b.members) and len(b.members) == 4
    members = take("M")
    info = skiplock.get_batch(b.id)
    assert (info.total, info.processing, info.progress) == (4, 4, 0.0)
    for job in members[:3]:
        complete(job)
    assert skiplock.get_batch(b.id).progress == 0.75
    assert take("DONE") == [] and take("SOME_FAILED") == []
    fail(members[3], "boom", retry=False)
    callback = take("SOME_FAILED")
    assert [j.id for j in callback] == [b.callback_id]
    assert callback[0].payload == {"report": "r1", "batch": {
        "id": b.id, "total": 4, "completed": 3, "deadLettered": 1, "cancelled": 0,
        "deleted": 0}}
    info = skiplock.get_batch(b.id)
    assert info.progress == 1.0 and info.ended_at is not None
    assert count("type IN ('DONE', 'SOME_FAILED')") == 1


def test_on_complete_when_every_member_completed_and_nothing_with_only_on_failure() -> None:
    with skiplock.batch(on_complete=("DONE", {})) as good:
        enqueue("M", {})
    complete(take("M")[0])
    assert take("DONE")[0].payload["batch"]["completed"] == 1
    with skiplock.batch(on_failure=("SOME_FAILED", {})) as quiet:
        enqueue("M", {})
    complete(take("M")[0])
    assert row(quiet.callback_id).st == "COMPLETED"
    assert row(quiet.callback_id).result["callback"] == "none: every member completed"
    assert take("SOME_FAILED") == []
    assert good.id != quiet.id


def test_an_empty_batch_calls_back_at_once() -> None:
    with skiplock.batch(on_complete=("DONE", {})) as b:
        pass
    job = take("DONE")[0]
    assert job.id == b.callback_id and job.payload["batch"]["total"] == 0


def test_the_last_two_members_ended_by_two_sessions_at_once_call_back_once(
        database_url: str) -> None:
    for attempt in range(15):
        with skiplock.batch(on_complete=("DONE", {"attempt": attempt})) as b:
            enqueue("M", {})
            enqueue("M", {})
        first, second = take("M")
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def end(job: skiplock.Job, barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors) -> None:
            conn = psycopg2.connect(libpq_dsn(database_url))
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")  # connected and in a transaction: ready to go
                    barrier.wait(5)
                    # The second one waits for the first one's lock on the callback's
                    # row, and then decrements what the first one left.
                    cur.execute("""UPDATE "WorkerJob" SET status = 'COMPLETED',
                                   "completedAt" = now() WHERE id = %s""", (job.id,))
                conn.commit()
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=end, args=(j,)) for j in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors
        ready = take("DONE")
        assert [j.id for j in ready] == [b.callback_id]
        assert ready[0].payload["batch"]["completed"] == 2
        complete(ready[0])
    assert count("type = 'DONE'") == 15


def test_a_rerun_of_the_fan_out_with_keys_writes_nothing_twice() -> None:
    def fan_out() -> skiplock.Batch:
        with skiplock.batch(on_complete=("DONE", {}), key="weekly-2026-W11") as b:
            for day in range(7):
                enqueue("M", {"day": day}, idempotency_key=f"daily-{day}")
        return b

    first = fan_out()
    rows = count()
    again = fan_out()
    assert count() == rows == 8
    assert (again.id, again.callback_id) == (first.id, first.callback_id)
    for job in take("M"):
        complete(job)
    third = fan_out()  # after the members ended: still nothing new
    assert count() == 8 and third.callback_id == first.callback_id
    assert [j.id for j in take("DONE")] == [first.callback_id]


def test_a_block_that_raises_writes_nothing() -> None:
    with pytest.raises(RuntimeError), skiplock.batch(on_complete=("DONE", {})):
        enqueue("M", {})
        raise RuntimeError("the fan-out broke")
    assert count() == 0


def test_in_the_callers_transaction_and_what_a_batch_refuses() -> None:
    with db.get_engine().begin() as conn:
        with skiplock.batch(on_complete=("DONE", {}), conn=conn) as b:
            enqueue("M", {})
            enqueue("M", {}, conn=conn)
            with pytest.raises(InvalidJob, match="batches do not nest"), \
                    skiplock.batch(on_complete=("DONE", {})):
                pass
            with db.get_engine().begin() as other, pytest.raises(InvalidJob, match="batch's"):
                enqueue("M", {}, conn=other)
        assert count() == 0  # nothing committed yet: the caller's transaction holds it
    assert skiplock.get_batch(b.id).total == 2
    with pytest.raises(InvalidJob, match="on_complete, on_failure or both"):
        skiplock.batch().__enter__()
    with pytest.raises(InvalidJob, match="pair"):
        skiplock.batch(on_complete="DONE").__enter__()  # type: ignore[arg-type]


def test_wait_on_a_batch_returns_its_callback_once_it_ended() -> None:
    with skiplock.batch(on_complete=("DONE", {})) as b:
        enqueue("M", {})
    with pytest.raises(skiplock.queue_core.WaitTimeout):
        skiplock.wait(b.id, timeout=0.2)
    complete(take("M")[0])
    complete(take("DONE")[0], {"sent": True})
    done = skiplock.wait(b.id, timeout=5)
    assert done.id == b.callback_id and done.result == {"sent": True}
    with pytest.raises(skiplock.queue_core.JobNotFound):
        skiplock.wait("batch-nothing", timeout=1)


def test_the_cli_shows_a_batch_and_a_jobs_parents_and_dependents() -> None:
    import json

    from tests.ops.helpers import run

    with skiplock.batch(on_complete=("DONE", {})) as b:
        first = enqueue("M", {})
        enqueue("M", {})
    complete(take("M", limit=1)[0])
    shown = run("batch", b.id)
    assert shown.exit_code == 0, shown.output
    assert f"batch {b.id}: 2 members, 1 ended (50%): 1 completed" in shown.output
    assert f"callback {b.callback_id} DONE: PENDING (waits for the members)" in shown.output
    assert first in shown.output
    data = json.loads(run("batch", b.id, "--json", "--limit", "1").output)
    assert data["total"] == 2 and len(data["members"]) == 1
    missing = run("batch", "batch-nope")
    assert missing.exit_code == 1 and "no batch with id 'batch-nope'" in missing.output
    job = run("job", b.callback_id).output
    assert "parents:" in job and first in job and f"batch: {b.id}" in job
