"""Handlers of the group commit tests (`--handlers tests.pool.group_handlers`)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from sqlalchemy import text

from skiplock.handlers import JobResult, handler
from skiplock.queue_core import db
from tests.pool.sample_handlers import _mark_started, _record_run


@handler("TEST_GROUP")
def grouped(payload: dict[str, Any], job_id: str) -> JobResult:
    """Record the start (own transaction) and the run (the job's transaction); then
    fail, raise, kill the process or lose its connection on its first start, as the
    payload says."""
    started = time.time()
    earlier = _mark_started(job_id)
    _record_run(job_id, started)
    if payload.get("fail"):
        return JobResult(False, error="asked to fail", should_retry=False)
    if payload.get("raise"):
        raise ValueError("asked to raise")
    if payload.get("crash_first") and earlier == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    if payload.get("terminate_first") and earlier == 0:
        # The job's own connection (the group's) dies under the handler, as in a
        # failover: the server ends this very backend.
        with db.transaction() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return JobResult(True)


@handler("TEST_QUIET")
def quiet(payload: dict[str, Any], job_id: str) -> JobResult:
    """Never touches its job's transaction (its start is recorded on a connection of its
    own): its group has nothing to commit but completions (pool/child.py
    `commit_alone`). With "steal", it takes another job of its group from the worker,
    as a rescue on another host would."""
    _mark_started(job_id)
    if payload.get("steal"):
        with db.get_engine().begin() as conn:
            conn.execute(text("""UPDATE "WorkerJob" SET "lockedBy" = 'elsewhere' WHERE id = :j"""),
                         {"j": payload["steal"]})
    return JobResult(True)
