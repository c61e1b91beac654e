"""Workflows (queue_core/features/dependencies.py, batches.py) with the rest of issue 28:
`aenqueue(..., depends_on=)` runs the same graph steps as `enqueue`, `await_result` and
`wait` wait on a batch's callback, dependents and callbacks keep the enqueuing span's
trace context, and a batch's callback may be a payload model's instance.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider

import skiplock
from skiplock.handlers.registry import JobResult, register_handler, unregister_handler
from skiplock.queue_core import InvalidJob, InvalidPayload, JobNotFound
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.testing import drain
from tests.applications.test_asyncio import run
from tests.queue_core.helpers import count, row, sql


def _take(job_type: str) -> list[skiplock.Job]:
    return skiplock.claim("w", limit=100, types=[job_type])


def _waiting(job_id: str) -> tuple[Any, Any]:
    stored = row(job_id)
    return stored.heldBack, stored.waitingFor


# -- aenqueue with parents --------------------------------------------------------------


def test_aenqueue_writes_a_dependent_that_waits_for_its_parent() -> None:
    parent = skiplock.enqueue("WF_PART", {})

    async def go() -> tuple[str, list[str]]:
        child = await skiplock.aenqueue("WF_MERGE", {}, depends_on=[parent])
        # In one call, a later job names an earlier one by position.
        many = await skiplock.aenqueue_many([
            {"type": "WF_PART", "payload": {"n": 1}},
            {"type": "WF_MERGE", "payload": {"n": 1}, "depends_on": [0, parent],
             "on_parent_failure": "run"}])
        return child, many

    child, [first, second] = run(go())
    assert _waiting(child) == (False, 1) and _waiting(second) == (False, 2)
    assert [(e.id, e.policy) for e in skiplock.parents(second)] == sorted(
        [(parent, "run"), (first, "run")])
    assert _take("WF_MERGE") == []
    parts = {j.id: j for j in _take("WF_PART")}
    skiplock.complete(parts[parent], {"part": 0})
    assert [j.id for j in _take("WF_MERGE")] == [child]  # the commit made it ready
    skiplock.fail(parts[first], "boom", retry=False)  # "run": counts as done
    [merged] = _take("WF_MERGE")
    assert merged.id == second
    assert skiplock.parent_results(second) == {parent: {"part": 0}}


def test_aenqueue_with_parents_joins_the_callers_transaction(database_url: str) -> None:
    parent = skiplock.enqueue("WF_PART", {})

    async def go() -> str:
        async with await psycopg.AsyncConnection.connect(libpq_dsn(database_url)) as conn:
            await skiplock.aenqueue("WF_MERGE", {}, depends_on=[parent], conn=conn)
            await conn.rollback()
            return await skiplock.aenqueue("WF_MERGE", {"kept": True}, depends_on=[parent],
                                           conn=conn)

    kept = run(go())
    assert [r[0] for r in sql('SELECT id FROM "WorkerJob" WHERE type = \'WF_MERGE\'')] == [kept]
    assert [e.id for e in skiplock.dependents(parent)] == [kept]


def test_aenqueue_on_a_connection_in_autocommit_writes_the_graph_in_one_transaction(
        database_url: str) -> None:
    parent = skiplock.enqueue("WF_PART", {})

    async def go() -> str:
        dsn = libpq_dsn(database_url)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            child = await skiplock.aenqueue("WF_MERGE", {}, depends_on=[parent], conn=conn)
            with pytest.raises(InvalidJob, match="names no job"):
                await skiplock.aenqueue("WF_MERGE", {}, depends_on=["no-such-job"], conn=conn)
            # Rolled back, not left open: the caller's connection is as it was.
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            return child

    child = run(go())
    xmins = {int(r[0]) for r in sql(
        'SELECT xmin::text::bigint FROM "WorkerJob" WHERE id IN (:p, :c) UNION ALL '
        'SELECT xmin::text::bigint FROM "WorkerJobDependency" WHERE child = :c',
        p=parent, c=child)}
    assert len(xmins) == 1  # the parent's mark, the dependent and its edge: one transaction


def test_aenqueue_refuses_what_enqueue_refuses_and_writes_nothing() -> None:
    with pytest.raises(InvalidJob) as blocking:
        skiplock.enqueue("WF_MERGE", {}, depends_on=["no-such-job"])
    with pytest.raises(InvalidJob) as refused:
        run(skiplock.aenqueue("WF_MERGE", {}, depends_on=["no-such-job"]))
    assert str(refused.value) == str(blocking.value)
    with pytest.raises(InvalidJob, match="depends on itself"):
        run(skiplock.aenqueue_many([{"type": "WF_MERGE", "payload": {}, "depends_on": [0]}]))
    assert count() == 0


def test_aenqueue_inside_a_batch_is_refused_rather_than_written_outside_it() -> None:
    async def go() -> None:
        with skiplock.batch(on_complete=("WF_DONE", {})):
            skiplock.enqueue("WF_PART", {})
            await skiplock.aenqueue("WF_PART", {"async": True})

    with pytest.raises(InvalidJob, match="inside `with skiplock.batch"):
        run(go())
    assert count() == 0  # the block raised: nothing of it was written


# -- waiting on a batch -------------------------------------------------------------------


def _one_member_batch() -> Any:
    with skiplock.batch(on_complete=("WF_DONE", {})) as b:
        skiplock.enqueue("WF_PART", {})
    return b


def _end_batch_later(b: Any, after: float = 0.3) -> None:
    time.sleep(after)
    [member] = _take("WF_PART")
    skiplock.complete(member)
    # The waiter's mark locks the callback's row for an instant; a claim skips it.
    for _ in range(500):
        claimed = _take("WF_DONE")
        if claimed:
            break
        time.sleep(0.02)
    [callback] = claimed
    skiplock.complete(callback, {"sent": True})


def test_await_result_of_a_batch_is_its_callback_woken_by_its_notification() -> None:
    b = _one_member_batch()

    async def go() -> tuple[Any, float]:
        began = time.monotonic()
        waiter = asyncio.create_task(skiplock.await_result(b.id, timeout=20, poll_max=30))
        await asyncio.sleep(0.3)  # the waiter marks the callback and listens
        _end_batch_later(b, after=0)  # another worker's, blocking this loop meanwhile
        return await waiter, time.monotonic() - began

    job, took = run(go())
    assert (job.id, job.status, job.result) == (b.callback_id, "COMPLETED", {"sent": True})
    assert took < 10  # the callback's notification, not the re-read every 30 s
    assert row(b.callback_id).notifyDone is True


def test_wait_on_a_batch_listens_for_its_callback() -> None:
    b = _one_member_batch()
    ender = threading.Thread(target=_end_batch_later, args=(b,))
    began = time.monotonic()
    ender.start()
    try:
        job = skiplock.wait(b.id, timeout=20, poll_max=30)
    finally:
        ender.join()
    assert (job.id, job.status) == (b.callback_id, "COMPLETED")
    assert time.monotonic() - began < 10


def test_waiting_on_an_unknown_batch_is_job_not_found() -> None:
    with pytest.raises(JobNotFound, match="no batch with id batch-nope"):
        skiplock.wait("batch-nope", timeout=1)
    with pytest.raises(JobNotFound, match="no batch with id batch-nope"):
        run(skiplock.await_result("batch-nope", timeout=1))


# -- trace context -------------------------------------------------------------------------


@pytest.fixture
def span() -> Iterator[Any]:
    provider = TracerProvider()
    with provider.get_tracer("tests.applications").start_as_current_span("POST /report") as s:
        yield s
    provider.shutdown()


def _stored_context(job_id: str) -> Any:
    return sql('SELECT "traceContext" FROM "WorkerJob" WHERE id = :id', id=job_id)[0][0]


def test_dependents_members_and_callbacks_keep_the_enqueuing_spans_context(span: Any) -> None:
    context = span.get_span_context()
    expected = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
                               f"{context.trace_flags:02x}"}
    parent = skiplock.enqueue("WF_PART", {})
    child = skiplock.enqueue("WF_MERGE", {}, depends_on=[parent])
    [first, second] = skiplock.enqueue_many([
        {"type": "WF_PART", "payload": {}},
        {"type": "WF_MERGE", "payload": {}, "depends_on": [0]}])
    with skiplock.batch(on_complete=("WF_DONE", {})) as b:
        member = skiplock.enqueue("WF_PART", {"member": True})
    from_async = run(skiplock.aenqueue("WF_MERGE", {}, depends_on=[parent]))
    for job_id in (parent, child, first, second, member, b.callback_id, from_async):
        assert _stored_context(job_id) == expected, job_id


# -- a typed callback ----------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    week: str
    batch: dict[str, Any] | None = None  # the members' counts, given to the callback


@pytest.fixture
def typed_report() -> Iterator[list[Report]]:
    seen: list[Report] = []

    def send(payload: Report, job_id: str) -> JobResult:
        seen.append(payload)
        return JobResult(True)

    register_handler("WF_REPORT", send, payload=Report)
    register_handler("WF_PART", lambda payload, job_id: JobResult(True))
    yield seen
    unregister_handler("WF_REPORT")
    unregister_handler("WF_PART")


def test_a_batch_callback_may_be_a_payload_model_instance(typed_report: list[Report]) -> None:
    with skiplock.batch(on_complete=("WF_REPORT", Report(week="2026-W11"))) as b:
        for n in range(2):
            skiplock.enqueue("WF_PART", {"n": n})
    stored = sql('SELECT "onComplete" FROM "WorkerBatch" WHERE id = :id', id=b.id)[0][0]
    assert stored == {"type": "WF_REPORT", "payload": {"week": "2026-W11", "batch": None}}
    drain()
    [report] = typed_report
    assert report.week == "2026-W11"
    assert report.batch is not None
    assert (report.batch["total"], report.batch["completed"]) == (2, 2)
    assert report.batch["id"] == b.id
    # Checked as an enqueue would, before the block runs.
    with pytest.raises(InvalidPayload, match="week"), \
            skiplock.batch(on_complete=("WF_REPORT", {"week": 11})):
        pass
