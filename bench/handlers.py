"""Handlers the pool benchmarks run (`--handlers bench.handlers`)."""

from __future__ import annotations

import time
from typing import Any

from skiplock.handlers import JobResult, handler


@handler("BENCH_NOOP")
def noop(payload: dict[str, Any], job_id: str) -> JobResult:
    return JobResult(success=True)


@handler("BENCH_CPU")
def burn(payload: dict[str, Any], job_id: str) -> JobResult:
    """Hold the CPU in pure Python for payload["ms"] milliseconds."""
    until = time.process_time() + payload.get("ms", 20) / 1000
    n = 0
    while time.process_time() < until:
        n += 1
    return JobResult(success=True, data={"loops": n})
