"""Handlers for the pool tests of tests/ops (`skiplock worker --handlers tests.ops.handlers_for_tests`)."""

from __future__ import annotations

import time
from typing import Any

from skiplock.handlers import JobResult, handler


@handler("OPS_OK")
def ok(payload: dict[str, Any], job_id: str) -> JobResult:
    return JobResult(success=True)


@handler("OPS_FAIL")
def fail(payload: dict[str, Any], job_id: str) -> JobResult:
    return JobResult(success=False, error="told to fail", should_retry=False)


@handler("OPS_SLOW")
def slow(payload: dict[str, Any], job_id: str) -> JobResult:
    time.sleep(float(payload.get("seconds", 30)))
    return JobResult(success=True)
