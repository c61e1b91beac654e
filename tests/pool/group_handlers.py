"""Handlers of the group commit tests (`--handlers tests.pool.group_handlers`)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.pool import Pool

from skiplock.handlers import JobResult, handler
from skiplock.queue_core.database import db
from tests.pool.sample_handlers import _mark_started, _record_run


@handler("TEST_GROUP")
def grouped(payload: dict[str, Any], job_id: str) -> JobResult:
    """Record the start (own transaction) and the run (the job's transaction); then
    fail, raise, kill the process or lose its connection on its first start, as the
    payload says."""
    started = time.time()
    earlier = _mark_started(job_id)
    _record_run(job_id, started)
    if payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    if payload.get("fail"):
        return JobResult(False, error="asked to fail", should_retry=False)
    if payload.get("raise"):
        raise ValueError("asked to raise")
    if payload.get("crash_first") and earlier == 0 or payload.get("crash_always"):
        os.kill(os.getpid(), signal.SIGKILL)
    if payload.get("terminate_first") and earlier == 0:
        # The job's own connection (the group's) dies under the handler, as in a
        # failover: the server ends this very backend.
        with db.transaction() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return JobResult(True)


# A session that holds a job's row lock from one job of a child to a later one.
_held: list[Connection] = []


@handler("TEST_QUIET")
def quiet(payload: dict[str, Any], job_id: str) -> JobResult:
    """Never touches its job's transaction (its start is recorded on a connection of its
    own): its group has nothing to commit but completions (pool/child.py
    `commit_alone`). With "steal", it takes another job of its group from the worker,
    as a rescue on another host would. With "lock_own_row" (first run only), another
    session of this process keeps its row locked, so the statement that completes it waits; with
    "cut_ahead", a later job of the batch ends the backend of that waiting statement
    (sent ahead of it: pool/ahead.py), then lets the lock go; with "release_held", a
    later job lets it go. With "sleep", it runs that many seconds."""
    earlier = _mark_started(job_id)
    if payload.get("steal"):
        with db.get_engine().begin() as conn:
            conn.execute(text("""UPDATE "WorkerJob" SET "lockedBy" = 'elsewhere' WHERE id = :j"""),
                         {"j": payload["steal"]})
    if payload.get("lock_own_row") and earlier == 0:
        holder = db.get_engine().connect()
        holder.execute(text("""SELECT 1 FROM "WorkerJob" WHERE id = :j FOR UPDATE"""),
                       {"j": job_id})
        _held.append(holder)
    if payload.get("cut_ahead") and earlier == 0:
        _end_waiting_backend()
    if payload.get("cut_ahead") and earlier == 0 or payload.get("release_held"):
        while _held:
            holder = _held.pop()
            holder.rollback()
            holder.close()
    time.sleep(float(payload.get("sleep", 0)))
    return JobResult(True)


def _end_waiting_backend(timeout_s: float = 10.0) -> None:
    """Terminate this process's backend that waits for a row lock (deadline-bound)."""
    deadline = time.monotonic() + timeout_s
    with db.get_engine().connect() as conn:
        while time.monotonic() < deadline:
            ended = conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :app AND wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid()"), {"app": f"skiplock[{os.getpid()}]"}).all()
            conn.rollback()
            if ended:
                return
            time.sleep(0.02)
    raise AssertionError("no statement of this worker waited for the row lock")


# Connections this process has taken out of any engine's pool (counted from the
# import on: in a pool child, from its boot).
_checkouts = [0]


def _count_checkout(*_: object) -> None:
    _checkouts[0] += 1


event.listen(Pool, "checkout", _count_checkout)


@handler("TEST_CHECKOUTS")
def checkouts(payload: dict[str, Any], job_id: str) -> JobResult:
    """Append this process's checkouts so far to the file `payload["file"]`; with
    "write", also write a run into the job's transaction (pool_test_runs)."""
    if payload.get("write"):
        _record_run(job_id, time.time())
    with open(payload["file"], "a") as out:
        out.write(f"{job_id} {_checkouts[0]}\n")
    return JobResult(True)
