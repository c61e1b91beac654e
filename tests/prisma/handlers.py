"""The seed's six job types as the seed's own team registers them: their handlers replace the
built-in ones, which need the demo domain that the seed's database does not have."""

from __future__ import annotations

from typing import Any

from skiplock import JobResult, handler
from skiplock.queue_core.payloads import BUILTIN_TYPES


def _done(payload: dict[str, Any], job_id: str) -> JobResult:
    return JobResult(success=True, data={"handledBy": "the seed's team", "keys": sorted(payload)})


for job_type in BUILTIN_TYPES:
    handler(job_type)(_done)
