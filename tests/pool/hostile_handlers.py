"""Handlers that break things the pool must account for (tests/pool/test_pool_accounting.py).

Loaded beside `tests.pool.sample_handlers`. Each does for real what a hostile
or unlucky handler does: kills its own database session, lets it time out
while it waits on something else, fails on a database that is not skiplock's,
or hands back text and results PostgreSQL cannot store.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import create_engine, text

from skiplock.handlers import JobResult, handler
from skiplock.queue_core.database import db


def _mark_started(job_id: str) -> None:
    with db.get_engine().begin() as conn:
        conn.execute(text("INSERT INTO pool_test_starts (job_id, pid) VALUES (:j, :p)"),
                     {"j": job_id, "p": os.getpid()})


@handler("TEST_KILL_OWN_SESSION")
def kill_own_session(payload: dict[str, Any], job_id: str) -> JobResult:
    """Its query ends its own backend, as a query that crashes its backend would."""
    _mark_started(job_id)
    with db.transaction() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return JobResult(True)


@handler("TEST_IDLE_TIMEOUT")
def idle_timeout(payload: dict[str, Any], job_id: str) -> JobResult:
    """Writes, then waits on 'a web service' past idle_in_transaction_session_timeout."""
    _mark_started(job_id)
    with db.transaction() as conn:
        conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 100"))
        conn.execute(text("SELECT 1"))
    time.sleep(0.6)
    return JobResult(True)


@handler("TEST_OTHER_DATABASE")
def other_database(payload: dict[str, Any], job_id: str) -> JobResult:
    """Fails on a database of its own (nothing listens there): the handler's error."""
    _mark_started(job_id)
    engine = create_engine(payload["url"], connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    return JobResult(True)


@handler("TEST_UNSTORABLE")
def unstorable(payload: dict[str, Any], job_id: str) -> JobResult:
    """Raises or returns text with NUL and lone surrogates, as payload['mode'] says."""
    bad = "nul\x00 surrogate\udc80 end"
    mode = payload.get("mode")
    if mode == "raise":
        raise ValueError(bad)
    if mode == "fail":
        return JobResult(False, error=bad + "x" * 200_000, should_retry=False)
    if mode == "huge":
        return JobResult(True, data={"blob": "y" * (2 * 1024 * 1024)})
    return JobResult(True, data={bad: [bad, float("nan"), 10 ** 5000]})


HOSTILE = "\x00\udc80"  # what no JSON payload can carry, added by the handler itself


@handler("TEST_ECHO")
def echo(payload: dict[str, Any], job_id: str) -> JobResult:
    """Hands back arbitrary data, or fails with arbitrary text, as payload['mode'] says."""
    mode, message = payload.get("mode"), str(payload.get("message", ""))
    if mode == "raise":
        raise RuntimeError(message + HOSTILE)
    if mode == "fail":
        return JobResult(False, error=message + HOSTILE, should_retry=False)
    value = payload.get("value")
    return JobResult(True, data=[value, message + HOSTILE, {message + HOSTILE: value},
                                 float("nan"), 10 ** 4400])


@handler("TEST_SKIPLOCK_CALL_LOSES_CONNECTION")
def skiplock_call_loses_connection(payload: dict[str, Any], job_id: str) -> JobResult:
    """A skiplock call of the handler's, on a connection of its own, loses it."""
    _mark_started(job_id)
    db.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return JobResult(True)
