"""A child's own settlements carry the run's checkpoint: a failure that waits in the
group for its commit, a snooze, a completion whose group could not commit (the
executor and the completer in the test's process, as tests/pool/test_executor.py
runs them, against a real database)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import skiplock
from skiplock.handlers import JobResult, register_handler, unregister_handler
from skiplock.queue_core import enqueue
from tests.pool.test_executor import Rig, _status, _write
from tests.queue_core.helpers import sql


@pytest.fixture
def child(database_url: str) -> Iterator[Rig]:
    sql("CREATE TABLE IF NOT EXISTS exec_test_writes (job_id text NOT NULL)")
    register_handler("EX_STEPS", steps)
    rig = Rig(database_url)
    yield rig
    rig.group.close()
    rig.completer.close()
    unregister_handler("EX_STEPS")


def stored(job_id: str) -> Any:
    [(text,)] = sql('SELECT checkpoint::text FROM "WorkerJob" WHERE id = :id', id=job_id)
    return None if text is None else json.loads(text)


def steps(payload: dict[str, Any], job_id: str) -> JobResult:
    """Resumes from its checkpoint, takes one more, then ends as the payload says."""
    done = (skiplock.last_checkpoint() or 0) + 1
    if payload.get("write"):
        _write(job_id)  # in the job's transaction: the group has something to commit
    skiplock.checkpoint(done)
    if payload["end"] == "raise":
        raise RuntimeError(f"step {done} broke")
    if payload["end"] == "snooze":
        return JobResult.snooze(60)
    return JobResult(True, data=done)


def test_a_failure_waiting_in_the_group_keeps_its_checkpoint_past_the_next_jobs_start(
    child: Rig,
) -> None:
    failing = enqueue("EX_STEPS", {"end": "raise"}, priority=2)
    done = enqueue("EX_STEPS", {"end": "complete"}, priority=1)
    sql("""UPDATE "WorkerJob" SET checkpoint = '4' WHERE id = :id""", id=failing)
    for job in child.claim(2):
        assert child.run(job) is None  # both wait in the group
    child.completer.commit_group()
    assert (_status(failing).status, stored(failing)) == ("PENDING", 5)
    assert (_status(done).status, stored(done)) == ("COMPLETED", None)
    assert child.finished() == {failing: "retried", done: "completed"}


def test_a_snooze_writes_the_runs_checkpoint(child: Rig) -> None:
    job_id = enqueue("EX_STEPS", {"end": "snooze"})
    [job] = child.claim(1)
    assert child.run(job) == "snoozed"
    assert (_status(job_id).status, stored(job_id)) == ("PENDING", 1)


def test_a_completion_its_group_could_not_commit_is_interrupted_with_its_checkpoint(
    child: Rig,
) -> None:
    ran = enqueue("EX_STEPS", {"end": "complete", "write": True}, priority=2)
    stolen = enqueue("EX_STEPS", {"end": "complete", "write": True}, priority=1)
    for job in child.claim(2):
        assert child.run(job) is None
    sql('UPDATE "WorkerJob" SET "lockedBy" = \'elsewhere\' WHERE id = :id', id=stolen)
    child.completer.commit_group()  # aborted: the other job was rescued meanwhile
    mate = _status(ran)
    assert (mate.status, mate.attempts, mate.interruptions) == ("PENDING", 0, 1)
    assert stored(ran) == 1  # its next run resumes after the step it did
