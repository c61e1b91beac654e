"""One job's life (pool/executor.py) and the group's commit (pool/completer.py),
run in the test's own process against the real database: no pool, no fork.

Each test claims real rows as a worker would, runs them through the executor,
commits through the completer, and reads what the table says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from skiplock.handlers.registry import JobResult, register_handler, unregister_handler
from skiplock.pool import protocol
from skiplock.pool.ahead import AheadConnection
from skiplock.pool.completer import Completer
from skiplock.pool.executor import Executor
from skiplock.pool.group_commit import Group
from skiplock.pool.outage import Outage
from skiplock.pool.outcomes import JobOutcome
from skiplock.pool.producer import Producer
from skiplock.pool.settler import Settler
from skiplock.queue_core import Job, claim, enqueue
from skiplock.queue_core.config import load_settings
from skiplock.queue_core.database import db
from skiplock.queue_core.features.cancel import end_cancelled
from tests.queue_core.helpers import sql


class Rig:
    """A child's roles, wired as pool/child.py wires them, with what they send kept."""

    def __init__(self, database_url: str) -> None:
        settings = load_settings(database_url=database_url)
        self.worker_id = f"testhost:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sent: list[protocol.Message] = []
        outage = Outage("test worker", logging.getLogger("skiplock.test"))
        self.settler = Settler(self.worker_id, outage, os.getppid(),
                               lambda timeout: time.sleep(min(max(timeout, 0.0), 0.05)))
        self.group = Group(0.01)
        self.producer = Producer(settings, slot=0, worker_id=self.worker_id,
                                 settler=self.settler, send=self.send, gate=None, children=1,
                                 served=None, stopping=lambda: False,
                                 recycle_reason=lambda after=0: None)
        self.completer = Completer(slot=0, worker_id=self.worker_id, group=self.group,
                                   settler=self.settler, producer=self.producer,
                                   outage=outage, lease_s=30.0, ahead=AheadConnection(None),
                                   send=self.send)
        self.executor = Executor(settings, self.worker_id, self.group, self.settler, outage,
                                 self.completer.abandon_group)

    def send(self, *messages: protocol.Message) -> None:
        self.sent.extend(messages)

    def claim(self, count: int) -> list[Job]:
        jobs = claim(self.worker_id, limit=count)
        assert len(jobs) == count
        return jobs

    def run(self, job: Job) -> JobOutcome | None:
        registration, _ = self.executor.prepare(job)
        return self.executor.execute(job, registration, time.monotonic())

    def finished(self) -> dict[str, str]:
        return {m.id: m.outcome for m in self.sent if isinstance(m, protocol.Finished)}


@pytest.fixture
def rig(database_url: str) -> Iterator[Rig]:
    rig = Rig(database_url)
    yield rig
    rig.group.close()
    rig.completer.close()


@pytest.fixture
def handlers() -> Iterator[Callable[[str, Callable[[dict[str, Any], str], JobResult]], None]]:
    types: list[str] = []

    def register(job_type: str, fn: Callable[[dict[str, Any], str], JobResult]) -> None:
        register_handler(job_type, fn)
        types.append(job_type)

    yield register
    for job_type in types:
        unregister_handler(job_type)


def _write(job_id: str) -> None:
    with db.transaction() as conn:  # the job's own transaction, in its savepoint
        conn.execute(text("INSERT INTO exec_test_writes (job_id) VALUES (:j)"), {"j": job_id})


def _writes() -> list[str]:
    return [r[0] for r in sql("SELECT job_id FROM exec_test_writes ORDER BY job_id")]


@pytest.fixture(autouse=True)
def writes_table(database_url: str) -> None:
    sql("CREATE TABLE IF NOT EXISTS exec_test_writes (job_id text NOT NULL)")
    sql("TRUNCATE exec_test_writes")


def _one(statement: str, **params: Any) -> Any:
    return sql(statement, **params)[0]


def _status(job_id: str) -> Any:
    return _one('SELECT status::text AS status, attempts, interruptions, "lastError" '
               'FROM "WorkerJob" WHERE id = :id', id=job_id)


def test_success_waits_in_the_group_and_commits_with_its_writes(rig: Rig, handlers: Any) -> None:
    handlers("EX_OK", lambda payload, job_id: (_write(job_id), JobResult(True, data=7))[1])
    enqueue("EX_OK", {})
    [job] = rig.claim(1)
    assert rig.run(job) is None  # waits for the commit
    assert _status(job.id).status == "PROCESSING" and _writes() == []
    rig.completer.commit_group()
    assert _status(job.id).status == "COMPLETED"
    assert _writes() == [job.id]
    assert rig.finished() == {job.id: "completed"}


def test_a_returned_failure_and_a_raise_roll_back_their_writes_alone(
    rig: Rig, handlers: Any
) -> None:
    def failing(payload: dict[str, Any], job_id: str) -> JobResult:
        _write(job_id)
        if payload.get("raise"):
            raise ValueError("asked to raise")
        if payload.get("fail"):
            return JobResult(False, error="asked to fail", should_retry=False)
        return JobResult(True)

    handlers("EX_FAIL", failing)
    ok = enqueue("EX_FAIL", {}, priority=3)
    failed = enqueue("EX_FAIL", {"fail": True}, priority=2)
    raised = enqueue("EX_FAIL", {"raise": True}, priority=1)
    for job in rig.claim(3):
        assert rig.run(job) is None  # each waits in the group, failures too
    rig.completer.commit_group()
    assert _writes() == [ok]  # the failures' writes rolled back to their savepoints
    assert (_status(failed).status, _status(failed).lastError) == ("DEAD_LETTER", "asked to fail")
    assert _status(raised).status == "PENDING"  # retried after its backoff
    assert "ValueError: asked to raise" in _status(raised).lastError
    assert rig.finished() == {ok: "completed", failed: "dead_lettered", raised: "retried"}


def test_what_runs_around_each_job_wraps_the_handler_and_its_failure_is_the_jobs(
        rig: Rig, handlers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from skiplock.pool import executor

    monkeypatch.setattr(executor, "_around_jobs", [])
    seen: list[str] = []

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        seen.append("enter")
        if len(seen) > 3:
            raise RuntimeError("the framework refused")
        try:
            yield
        finally:
            seen.append("exit")

    executor.around_each_job(around)
    handlers("EX_AROUND", lambda payload, job_id: (seen.append("handler"), JobResult(True))[1])
    ok = enqueue("EX_AROUND", {}, priority=2)
    refused = enqueue("EX_AROUND", {}, priority=1)
    for job in rig.claim(2):
        assert rig.run(job) is None
    rig.completer.commit_group()
    assert seen == ["enter", "handler", "exit", "enter"]
    assert _status(ok).status == "COMPLETED"
    assert (_status(refused).status, _status(refused).attempts) == ("PENDING", 1)
    assert "RuntimeError: the framework refused" in _status(refused).lastError


def test_a_snooze_puts_the_job_back_uncharged(rig: Rig, handlers: Any) -> None:
    handlers("EX_SNOOZE", lambda payload, job_id: JobResult.snooze(60))
    job_id = enqueue("EX_SNOOZE", {})
    [job] = rig.claim(1)
    assert rig.run(job) is JobOutcome.SNOOZED
    state = _one('SELECT status::text AS status, attempts, "availableAt" > now() + interval '
                "'50 seconds' AS later FROM \"WorkerJob\" WHERE id = :id", id=job_id)
    assert (state.status, state.attempts, state.later) == ("PENDING", 0, True)


def test_a_statement_timeout_in_the_handler_is_its_failure(rig: Rig, handlers: Any) -> None:
    def slow(payload: dict[str, Any], job_id: str) -> JobResult:
        _write(job_id)
        with db.transaction() as conn:
            conn.execute(text("SET LOCAL statement_timeout = '20ms'"))
            conn.execute(text("SELECT pg_sleep(1)"))
        return JobResult(True)

    handlers("EX_TIMEOUT", slow)
    job_id = enqueue("EX_TIMEOUT", {})
    [job] = rig.claim(1)
    assert rig.run(job) is None
    rig.completer.commit_group()
    state = _status(job_id)
    assert state.status == "PENDING" and "statement timeout" in state.lastError
    assert _writes() == []


def test_a_job_cancelled_while_it_waited_ends_unrun(rig: Rig, handlers: Any) -> None:
    ran: list[str] = []
    handlers("EX_CANCEL", lambda payload, job_id: (ran.append(job_id), JobResult(True))[1])
    job_id = enqueue("EX_CANCEL", {})
    # A cancel that arrived while an earlier attempt ran, kept for the next worker.
    sql('UPDATE "WorkerJob" SET "cancelRequestedAt" = now(), "cancelledBy" = \'ops\' '
        "WHERE id = :id", id=job_id)
    [job] = rig.claim(1)
    assert rig.run(job) is JobOutcome.CANCELLED
    assert ran == []
    assert "before it started" in _status(job_id).lastError


def test_a_payload_that_cannot_be_decoded_fails_without_a_retry(
    rig: Rig, handlers: Any
) -> None:
    ran: list[str] = []
    handlers("EX_DEEP", lambda payload, job_id: (ran.append(job_id), JobResult(True))[1])
    job_id = enqueue("EX_DEEP", {})
    sql("""UPDATE "WorkerJob" SET payload = ('{"x": ' || repeat('[', 3000)
           || repeat(']', 3000) || '}')::jsonb WHERE id = :id""", id=job_id)
    [job] = rig.claim(1)
    assert job.decode_error is not None
    assert rig.run(job) is JobOutcome.DEAD_LETTERED
    assert ran == [] and "nested too deeply" in _status(job_id).lastError


def test_an_unknown_type_fails_without_a_retry(rig: Rig) -> None:
    job_id = enqueue("EX_NOBODY", {})
    [job] = rig.claim(1)
    assert rig.run(job) is JobOutcome.DEAD_LETTERED
    assert _status(job_id).lastError == "no handler registered for job type EX_NOBODY"


def test_a_job_lost_before_its_commit_aborts_the_group_and_its_mates_are_interrupted(
    rig: Rig, handlers: Any
) -> None:
    handlers("EX_WRITE", lambda payload, job_id: (_write(job_id), JobResult(True))[1])
    first = enqueue("EX_WRITE", {}, priority=2)
    stolen = enqueue("EX_WRITE", {}, priority=1)
    for job in rig.claim(2):
        assert rig.run(job) is None
    # Rescued elsewhere meanwhile: its writes are mixed with its mate's.
    sql('UPDATE "WorkerJob" SET "lockedBy" = \'elsewhere\' WHERE id = :id', id=stolen)
    rig.completer.commit_group()
    assert _writes() == []  # nothing of the group committed
    mate = _status(first)
    assert (mate.status, mate.attempts, mate.interruptions) == ("PENDING", 0, 1)
    assert "another job of the same commit was lost" in mate.lastError
    assert rig.finished() == {first: "released", stolen: "lost"}


def test_a_lost_job_of_a_group_that_wrote_nothing_costs_only_itself(
    rig: Rig, handlers: Any
) -> None:
    handlers("EX_QUIET", lambda payload, job_id: JobResult(True))
    kept = enqueue("EX_QUIET", {}, priority=2)
    stolen = enqueue("EX_QUIET", {}, priority=1)
    for job in rig.claim(2):
        assert rig.run(job) is None
    sql('UPDATE "WorkerJob" SET "lockedBy" = \'elsewhere\' WHERE id = :id', id=stolen)
    rig.completer.commit_group()
    assert _status(kept).status == "COMPLETED"
    assert rig.finished() == {kept: "completed", stolen: "lost"}


@pytest.mark.parametrize("writes", [True, False], ids=["a group that wrote",
                                                        "a group that wrote nothing"])
def test_a_job_cancelled_while_it_waits_for_the_commit_leaves_its_mates_committed(
    rig: Rig, handlers: Any, writes: bool
) -> None:
    handlers("EX_MAYBE", lambda payload, job_id: (
        _write(job_id) if payload["writes"] else None, JobResult(True))[1])
    mate = enqueue("EX_MAYBE", {"writes": writes}, priority=2)
    target = enqueue("EX_MAYBE", {"writes": writes}, priority=1)
    claimed = rig.claim(2)
    for job in claimed:
        assert rig.run(job) is None
    sql('UPDATE "WorkerJob" SET "cancelRequestedAt" = now(), "cancelledBy" = \'ops\' '
        "WHERE id = :id", id=target)
    assert end_cancelled(next(j for j in claimed if j.id == target), ran=True)
    rig.completer.commit_group()
    assert _status(mate).status == "COMPLETED"
    assert "after it ran, before its commit" in _status(target).lastError
    assert rig.finished() == {mate: "completed", target: "cancelled"}
    assert _writes() == (sorted([mate, target]) if writes else [])
