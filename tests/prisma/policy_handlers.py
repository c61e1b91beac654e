"""DETECT_PATTERNS with the built-in handler's own options (one per user at a time), its work
replaced by a timed step that records when it ran: the seed's database has no domain to mine."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

import skiplock.handlers.detect_patterns  # noqa: F401  (the built-in registration, read below)
from skiplock import JobResult
from skiplock.handlers.registry import get_registration, register_handler
from skiplock.queue_core.database import db
from skiplock.queue_core.payloads import DETECT_PATTERNS

BUILTIN = get_registration(DETECT_PATTERNS)
assert BUILTIN is not None


def _timed(payload: Any, job_id: str) -> JobResult:
    started = time.time()
    time.sleep(0.2)
    with db.transaction() as conn:  # joins the job's transaction
        conn.execute(text("INSERT INTO policy_runs (job_id, started, finished) "
                          "VALUES (:j, to_timestamp(:s), clock_timestamp())"),
                     {"j": job_id, "s": started})
    return JobResult(True)


register_handler(DETECT_PATTERNS, _timed, concurrency=BUILTIN.concurrency,
                 concurrency_key=BUILTIN.concurrency_key)
