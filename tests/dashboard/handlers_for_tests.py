"""Handlers for the dashboard's tests (`skiplock worker --handlers tests.dashboard.handlers_for_tests`)."""

from __future__ import annotations

import os
import time
from typing import Any

from skiplock.handlers import JobResult, handler


@handler("DASH_OK")
def ok(payload: dict[str, Any], job_id: str) -> JobResult:
    return JobResult(success=True, data={"echo": payload})


@handler("DASH_FLAKY")
def flaky(payload: dict[str, Any], job_id: str) -> JobResult:
    """Fails for good (a dead letter) until the file `payload["flag"]` exists."""
    if os.path.exists(payload["flag"]):
        return JobResult(success=True, data={"fixed": True})
    return JobResult(success=False, error=f"flag {payload['flag']} is missing; "
                     f"<b>not html</b>: {payload.get('note', '')}", should_retry=False)


@handler("DASH_SLOW")
def slow(payload: dict[str, Any], job_id: str) -> JobResult:
    time.sleep(float(payload.get("seconds", 30)))
    return JobResult(success=True)
