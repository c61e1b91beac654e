"""A handler module for the crash test: each built-in step dies once, mid-job.

Loaded into a pool with `--handlers tests.handlers.crash_once`. It wraps each
of the six built-in handlers: the first time a step runs (one marker file per
type in $SKIPLOCK_CRASH_DIR, created atomically), the real handler does all
its writes and its chained enqueue in the job's open transaction, and then the
child kills itself with SIGKILL before the job completes, as an out-of-memory
kill would. The retry must then find no trace of the first run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from skiplock.handlers.registry import Handler, JobResult, get_registration, register_handler
from skiplock.queue_core.payloads import BUILTIN_TYPES

CRASH_DIR = Path(os.environ.get("SKIPLOCK_CRASH_DIR", "."))


def _first_time(job_type: str) -> bool:
    try:
        fd = os.open(CRASH_DIR / f"crashed-{job_type}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _crashing(job_type: str, real: Handler) -> Handler:
    def run(payload: dict[str, Any], job_id: str) -> JobResult:
        result = real(payload, job_id)
        if result.success and _first_time(job_type):
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return run


for _type in BUILTIN_TYPES:
    _registration = get_registration(_type)
    assert _registration is not None, _type
    register_handler(_type, _crashing(_type, _registration.fn))
