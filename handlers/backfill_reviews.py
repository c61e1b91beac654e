"""BACKFILL_REVIEWS {period, from, to, userId?}: enqueue the reviews of a range of periods.

What a `reviews` schedule enqueues once per occurrence (see
`queue_core.schedules`): the per-user work runs in a worker child, never in
the master's loop. Built in, so any pool runs it and `skiplock enqueue` knows
the type.
"""

from __future__ import annotations

from typing import Any

from handlers.registry import JobResult, handler
from queue_core import schedules
from queue_core.errors import InvalidPayload


@handler(schedules.BACKFILL_REVIEWS)
def backfill_reviews(payload: dict[str, Any], job_id: str) -> JobResult:
    try:
        return JobResult(success=True, data=schedules.run_backfill_reviews(payload))
    except InvalidPayload as exc:
        return JobResult(success=False, error=str(exc), should_retry=False)
