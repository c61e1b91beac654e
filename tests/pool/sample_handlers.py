"""Handlers the pool tests run inside real worker processes.

Loaded with `skiplock worker --handlers tests.pool.sample_handlers` (the
repository root on PYTHONPATH). `pool_test_runs` gets one row per run that
committed (written in the job's transaction: it exists only if the job
completed), `pool_test_starts` one row per start (written in its own
transaction, so it survives a crash and tells a test which pid runs what).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from sqlalchemy import text

from skiplock.handlers import JobResult, handler
from skiplock.queue_core.database import db


def _mark_started(job_id: str) -> int:
    """Record the start outside the job's transaction; returns earlier starts of this job."""
    with db.get_engine().begin() as conn:
        earlier = conn.execute(text("SELECT count(*) FROM pool_test_starts WHERE job_id = :j"),
                               {"j": job_id}).scalar_one()
        conn.execute(text("INSERT INTO pool_test_starts (job_id, pid) VALUES (:j, :p)"),
                     {"j": job_id, "p": os.getpid()})
    return int(earlier)


def _record_run(job_id: str, started: float) -> None:
    with db.transaction() as conn:  # joins the job's transaction
        conn.execute(
            text("INSERT INTO pool_test_runs (job_id, pid, started, finished) "
                 "VALUES (:j, :p, to_timestamp(:s), clock_timestamp())"),
            {"j": job_id, "p": os.getpid(), "s": started},
        )


@handler("TEST_RECORD")
def record(payload: dict[str, Any], job_id: str) -> JobResult:
    started = time.time()
    if payload.get("seconds"):
        time.sleep(float(payload["seconds"]))
    _record_run(job_id, started)
    return JobResult(True, data={"pid": os.getpid()})


@handler("TEST_SLEEP")
def sleep(payload: dict[str, Any], job_id: str) -> JobResult:
    """Sleeps `seconds`, or `first_seconds` on its first start (to outlive a killed pool)."""
    started = time.time()
    earlier = _mark_started(job_id)
    seconds = payload.get("first_seconds", payload["seconds"]) if earlier == 0 else payload["seconds"]
    time.sleep(float(seconds))
    _record_run(job_id, started)
    return JobResult(True)


@handler("TEST_SPIN")
def spin(payload: dict[str, Any], job_id: str) -> JobResult:
    """Holds the GIL in pure Python for `seconds`: no thread of this process would run."""
    started = time.time()
    _mark_started(job_id)
    deadline = time.monotonic() + float(payload["seconds"])
    count = 0
    while time.monotonic() < deadline:
        count += 1
    _record_run(job_id, started)
    return JobResult(True, data={"loops": count})


@handler("TEST_POISON")
def poison(payload: dict[str, Any], job_id: str) -> JobResult:
    """Kills its own process every time, like a segfault or the OOM killer would."""
    _mark_started(job_id)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


@handler("TEST_EXIT")
def exit_now(payload: dict[str, Any], job_id: str) -> JobResult:
    _mark_started(job_id)
    os._exit(int(payload.get("code", 17)))


@handler("TEST_FAIL")
def failing(payload: dict[str, Any], job_id: str) -> JobResult:
    if payload.get("raise"):
        raise ValueError(payload["raise"])
    return JobResult(False, error=payload.get("error", "it did not work"),
                     should_retry=bool(payload.get("retry", True)))


@handler("TEST_SLOW_TYPE", timeout_s=1.0)
def slow_type(payload: dict[str, Any], job_id: str) -> JobResult:
    """A type whose registration sets a 1 s timeout, whatever --job-timeout says."""
    _mark_started(job_id)
    time.sleep(float(payload.get("seconds", 30)))
    return JobResult(True)


@handler("TEST_DB_TIMEOUT")
def db_timeout(payload: dict[str, Any], job_id: str) -> JobResult:
    """A handler whose own query always overruns its statement timeout."""
    with db.transaction() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 50"))
        conn.execute(text("SELECT pg_sleep(1)"))
    return JobResult(True)
