"""Handlers the feature tests run inside real worker processes (`--handlers
tests.features.handlers`). Writes that belong to the job go through the job's
transaction (`db.transaction()`); `_mark_started` writes in its own, so that a
test sees a start even when the job's transaction later rolls back."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from skiplock.handlers import JobResult, handler
from skiplock.queue_core import enqueue
from skiplock.queue_core.database import db
from tests.pool.sample_handlers import _mark_started, _record_run


@handler("TEST_CANCELLABLE")
def cancellable(payload: dict[str, Any], job_id: str) -> JobResult:
    """Writes its row and enqueues its next step, then works for `seconds`."""
    started = time.time()
    _record_run(job_id, started)
    with db.transaction() as conn:
        enqueue("TEST_NEXT_STEP", {"after": job_id}, conn=conn)
    _mark_started(job_id)
    time.sleep(float(payload.get("seconds", 60)))
    return JobResult(True)


@handler("TEST_PER_USER", concurrency=2, concurrency_key="user")
def per_user(payload: dict[str, Any], job_id: str) -> JobResult:
    """A user's step: at most two of one user at once, on every host."""
    started = time.time()
    _mark_started(job_id)
    time.sleep(float(payload.get("seconds", 0)))
    _record_run(job_id, started)
    return JobResult(True)


@handler("TEST_FAIR")
def fair_step(payload: dict[str, Any], job_id: str) -> JobResult:
    """A job of a fair key (enqueued with `fair_key=`): works for `seconds`."""
    time.sleep(float(payload.get("seconds", 0)))
    return JobResult(True)


@handler("TEST_REFUSE")
def refuse(payload: dict[str, Any], job_id: str) -> JobResult:
    """Fails for good, with the payload's reason."""
    return JobResult(False, error=str(payload.get("why")), should_retry=False)


@handler("TEST_SNOOZE", max_snoozes=3, max_attempts=4, backoff=[0.1])
def snoozer(payload: dict[str, Any], job_id: str) -> JobResult:
    """Snoozes `times` times (0.2 s each), then completes; writes nothing that survives a
    snooze (the job's transaction rolls back)."""
    from sqlalchemy import text

    with db.transaction() as conn:
        snoozes = conn.execute(text('SELECT COALESCE(snoozes, 0) FROM "WorkerJob" '
                                    "WHERE id = :id"), {"id": job_id}).scalar_one()
    if snoozes < int(payload["times"]):
        _record_run(job_id, time.time())  # rolled back with the snooze
        return JobResult.snooze(0.2)
    return JobResult(True, data={"snoozes": snoozes})


@handler("TEST_PROGRESS")
def reports_progress(payload: dict[str, Any], job_id: str) -> JobResult:
    """Reports in a tight loop (the child forwards a few a second), then holds 0.5 for
    `seconds`."""
    from skiplock import progress

    for i in range(10_000):
        progress(i / 20_000)
    progress(0.5, "halfway")
    _mark_started(job_id)
    time.sleep(float(payload.get("seconds", 30)))
    return JobResult(True)


@handler("TEST_STUBBORN")
def stubborn(payload: dict[str, Any], job_id: str) -> JobResult:
    """Swallows the child's Abandon (SIGQUIT) and keeps working: only SIGKILL ends it."""
    _mark_started(job_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # On purpose: a handler that swallows the Abandon that SIGQUIT raises in it.
        with contextlib.suppress(BaseException):
            time.sleep(0.1)
    return JobResult(True)


@handler("TEST_SEQUENCED", max_attempts=5, backoff=[0.1])
def sequenced(payload: dict[str, Any], job_id: str) -> JobResult:
    """A job of a sequence: records each start (outside its transaction) and its run;
    on its first start it may kill its own process (`die_first`) or fail (`fail_first`),
    to be retried."""
    import os
    import signal

    started = time.time()
    earlier = _mark_started(job_id)
    if earlier == 0 and payload.get("die_first"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(payload.get("seconds", 0)))
    if earlier == 0 and payload.get("fail_first"):
        return JobResult(False, error="first try fails", should_retry=True)
    _record_run(job_id, started)
    return JobResult(True)


@handler("TEST_RATED", rate="4/2s", rate_key="api")
def rated(payload: dict[str, Any], job_id: str) -> JobResult:
    """A call to a rate-limited API: at most four starts per key in any two seconds."""
    _record_run(job_id, time.time())
    return JobResult(True)
