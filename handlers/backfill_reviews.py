"""BACKFILL_REVIEWS {period, from?, to?, userId?}: enqueue the reviews of a range of periods.

Schedule it hourly with `payload = { period = "daily" }` and every user gets
their DAILY review once their own local day is over: without `from` and
`to`, the job offers each user's most recent ended periods (a lookback of one
period and two days, so a missed hour or a late run loses nothing), most of
which are already queued and skipped by the original service's review key. The fan-out
over users runs in a worker child, never in a master's loop.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from skiplock.handlers.backfill import PERIODS, db_now
from skiplock.handlers.backfill import backfill_reviews as enqueue_reviews
from skiplock.handlers.registry import JobResult, handler
from skiplock.queue_core.errors import InvalidJob, InvalidPayload

BACKFILL_REVIEWS = "BACKFILL_REVIEWS"
LOOKBACK_DAYS = {"daily": 1, "weekly": 7, "monthly": 31}


def _range(payload: dict[str, Any], period: str) -> tuple[date, date]:
    if "from" not in payload and "to" not in payload:
        today = db_now().date()
        return today - timedelta(days=LOOKBACK_DAYS[period] + 2), today + timedelta(days=1)
    try:
        first = date.fromisoformat(str(payload.get("from")))
        last = date.fromisoformat(str(payload.get("to", payload.get("from"))))
    except ValueError as exc:
        raise InvalidPayload(f"payload of {BACKFILL_REVIEWS}: {exc}") from None
    return first, last


@handler(BACKFILL_REVIEWS)
def backfill_reviews(payload: dict[str, Any], job_id: str) -> JobResult:
    period = payload.get("period")
    if period not in PERIODS:
        return JobResult(success=False, should_retry=False,
                         error=f"payload of {BACKFILL_REVIEWS}: period must be one of "
                               f"{', '.join(PERIODS)}, not {period!r}")
    try:
        first, last = _range(payload, period)
        user_id = payload.get("userId")
        outcome = enqueue_reviews(period, first, last,
                                  user_id=str(user_id) if user_id is not None else None)
    except (InvalidPayload, InvalidJob) as exc:
        return JobResult(success=False, error=str(exc), should_retry=False)
    return JobResult(success=True, data=outcome.to_dict())
