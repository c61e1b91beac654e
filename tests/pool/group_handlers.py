"""Handlers of the group commit tests (`--handlers tests.pool.group_handlers`)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from skiplock.handlers import JobResult, handler
from tests.pool.sample_handlers import _mark_started, _record_run


@handler("TEST_GROUP")
def grouped(payload: dict[str, Any], job_id: str) -> JobResult:
    """Record the start (own transaction) and the run (the job's transaction); then
    fail, raise or kill the process on its first start, as the payload says."""
    started = time.time()
    earlier = _mark_started(job_id)
    _record_run(job_id, started)
    if payload.get("fail"):
        return JobResult(False, error="asked to fail", should_retry=False)
    if payload.get("raise"):
        raise ValueError("asked to raise")
    if payload.get("crash_first") and earlier == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return JobResult(True)
