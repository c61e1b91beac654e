"""The chaos soak's handler: it leaves a trace of every moment it runs.

CHAOS_WORK works for `seconds` in steps of 50 ms; at every step it appends
`job_id run_token unix_time` to the effects log named by
SKIPLOCK_CHAOS_EFFECTS (one `write` on an O_APPEND file: lines never mix).
The log is a file on the host, not a table, on purpose: a run cut off from
the database (a partition, a hung server) still leaves its trace there, so
two runs of one job that overlap in time are seen even when only one of
them could reach the database. The run is recorded in `pool_test_runs` in the
job's own transaction, so a run counts as committed only with the completion;
a "quiet" job records nothing there and so writes nothing to the database: its
group commits alone, in one statement (pool/child.py `commit_alone`), and the
faults are thrown at that path too. A job with "fail" ends DEAD_LETTER after
its run, without retry (a workflow's parent whose dependents' policies apply).
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from skiplock.handlers import JobResult, handler
from tests.pool.sample_handlers import _record_run

STEP_S = 0.05


def _trace(fd: int, job_id: str, token: str) -> None:
    os.write(fd, f"{job_id} {token} {time.time():.6f}\n".encode())


@handler("CHAOS_WORK")
def work(payload: dict[str, Any], job_id: str) -> JobResult:
    started = time.time()
    token = secrets.token_hex(6)
    fd = os.open(os.environ["SKIPLOCK_CHAOS_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o644)
    try:
        deadline = time.monotonic() + float(payload.get("seconds", 0.2))
        _trace(fd, job_id, token)
        while time.monotonic() < deadline:
            time.sleep(STEP_S)
            _trace(fd, job_id, token)
        if payload.get("fail"):
            # A workflow's parent that fails for good: its dependents' policies apply.
            return JobResult(False, error="chaos: a planned failure", should_retry=False)
        if not payload.get("quiet"):
            _record_run(job_id, started)
        _trace(fd, job_id, token)
    finally:
        os.close(fd)
    return JobResult(True)


@handler("SOAK_NOOP")
def noop(payload: dict[str, Any], job_id: str) -> JobResult:
    """The many-hosts soak's filler (bench/soak.py): nothing to run, nothing written, so
    its throughput is the queue's own; its payload says "quiet"."""
    return JobResult(True)
