"""Handlers the pool benchmarks run (`--handlers bench.handlers`); the bodies are
bench/bodies.py, shared with the peers' workers (`python -m bench peers`)."""

from __future__ import annotations

from typing import Any

from bench import bodies
from skiplock.handlers import JobResult, handler


@handler("BENCH_NOOP")
def noop(payload: dict[str, Any], job_id: str) -> JobResult:
    bodies.noop()
    return JobResult(success=True)


@handler("BENCH_CPU")
def burn(payload: dict[str, Any], job_id: str) -> JobResult:
    """Hold the CPU in pure Python for payload["ms"] milliseconds."""
    bodies.burn(payload.get("ms", 20))
    return JobResult(success=True)


@handler("BENCH_PICKUP")
def pickup(payload: dict[str, Any], job_id: str) -> JobResult:
    bodies.record_pickup(payload["t0"])
    return JobResult(success=True)
