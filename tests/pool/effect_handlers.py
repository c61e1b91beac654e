"""A handler with an effect outside the database's transaction, as a handler that
sends mail or calls an API has: one row per run, written through a connection
of its own in autocommit, so that it survives whatever happens to the job's
transaction. The tests count repeated effects with it."""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import Engine, create_engine, text

from skiplock.handlers import JobResult, handler

_engine: list[Engine] = []


def _effects() -> Engine:
    if not _engine:  # one per child process, made after the fork
        _engine.append(create_engine(os.environ["DATABASE_URL"], isolation_level="AUTOCOMMIT",
                                     pool_size=1))
    return _engine[0]


@handler("TEST_EFFECT")
def effect(payload: dict[str, Any], job_id: str) -> JobResult:
    time.sleep(float(payload.get("seconds", 0.02)))
    with _effects().connect() as conn:
        conn.execute(text("INSERT INTO pool_test_effects (job_id, pid) VALUES (:j, :p)"),
                     {"j": job_id, "p": os.getpid()})
    return JobResult(True)
