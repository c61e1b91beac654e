"""Handlers of the checkpoint tests, run inside real worker processes (`--handlers
tests.features.checkpoint_handlers`) and inline by `skiplock.testing.drain`.

Each run records, outside the job's transaction (so that a killed run leaves its
trace), where it resumed from and every step it began: `checkpoint_steps` rows
(job id, pid, step, resumed), `resumed` true on the first step of a run.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from sqlalchemy import text

import skiplock
from skiplock.handlers import JobResult, handler
from skiplock.queue_core.database import db

TABLE = """
CREATE TABLE IF NOT EXISTS checkpoint_steps (
    job_id text NOT NULL, pid integer NOT NULL, step integer NOT NULL,
    resumed jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def _mark(job_id: str, step: int, resumed: Any = None) -> None:
    with db.get_engine().begin() as conn:
        conn.execute(text("INSERT INTO checkpoint_steps (job_id, pid, step, resumed) "
                          "VALUES (:j, :p, :s, CAST(:r AS jsonb))"),
                     {"j": job_id, "p": os.getpid(), "s": step,
                      "r": None if resumed is None else json.dumps(resumed)})


@handler("TEST_LONG_STEPS")
def long_steps(payload: dict[str, Any], job_id: str) -> JobResult:
    """`steps` steps of `step_s` each (the first `quick_steps` of `quick_s`), from where
    the last run got to; checkpoints and reports progress after every one."""
    steps = int(payload["steps"])
    quick_steps, quick_s = int(payload.get("quick_steps", 0)), float(payload.get("quick_s", 0))
    resumed = skiplock.last_checkpoint()
    start = resumed["next"] if resumed else 0
    _mark(job_id, start, {"resumed": resumed})
    for i in range(start, steps):
        if i > start:
            _mark(job_id, i)
        time.sleep(quick_s if i < quick_steps else float(payload["step_s"]))
        skiplock.checkpoint({"next": i + 1})
        skiplock.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    return JobResult(True, data={"resumed_from": start})


@handler("TEST_FAIL_AFTER_CHECKPOINT", max_attempts=3, backoff=[0.1])
def fail_after_checkpoint(payload: dict[str, Any], job_id: str) -> JobResult:
    """Checkpoints `{"done": n}` one further each run, then raises, until `runs` runs."""
    resumed = skiplock.last_checkpoint()
    _mark(job_id, 0, {"resumed": resumed})
    done = (resumed or {"done": 0})["done"] + 1
    skiplock.checkpoint({"done": done})
    if done < int(payload["runs"]):
        raise RuntimeError(f"run {done} fails after its checkpoint")
    return JobResult(True, data={"done": done})


@handler("TEST_SNOOZE_AFTER_CHECKPOINT", max_snoozes=5)
def snooze_after_checkpoint(payload: dict[str, Any], job_id: str) -> JobResult:
    """Checkpoints one more page each run and snoozes, until `pages` pages."""
    page = (skiplock.last_checkpoint() or 0) + 1
    skiplock.checkpoint(page)
    if page < int(payload["pages"]):
        return JobResult.snooze(0.1)
    return JobResult(True, data={"pages": page})


@handler("TEST_CHECKPOINT_THEN_WAIT")
def checkpoint_then_wait(payload: dict[str, Any], job_id: str) -> JobResult:
    """Checkpoints 0 to 999 in a tight loop (the child sends the first and keeps the
    latest for its throttle's timer), marks step 1000, then waits to be stopped."""
    for i in range(1000):
        skiplock.checkpoint(i)
    _mark(job_id, 1000)
    time.sleep(60)
    return JobResult(True)
