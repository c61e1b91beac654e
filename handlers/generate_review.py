"""GENERATE_REVIEW {userId, type, periodKey, timezone}: sum up a period in the
user's time zone; a DAILY review chains GENERATE_TOMORROW_PLAN for the next
calendar day there."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from skiplock.handlers.domain import store
from skiplock.handlers.domain.interpret import interpret_text
from skiplock.handlers.domain.model import Observation
from skiplock.handlers.domain.periods import DAILY, load_timezone, next_day, parse_period, to_local
from skiplock.handlers.domain.reviews import summarize_period
from skiplock.handlers.payloads import GenerateReview
from skiplock.handlers.registry import JobResult, handler
from skiplock.handlers.steps import require_user, run_step
from skiplock.queue_core import enqueue_generate_tomorrow_plan
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.features.dependencies import parent_results
from skiplock.queue_core.payloads import GENERATE_REVIEW


@handler(GENERATE_REVIEW, payload=GenerateReview)
def generate_review(payload: GenerateReview | dict[str, Any], job_id: str) -> JobResult:
    return run_step(GENERATE_REVIEW, GenerateReview, payload, lambda p: _review(p, job_id))


def _review(payload: GenerateReview, job_id: str) -> dict[str, Any]:
    user_id, review_type = payload.userId, payload.type
    period = parse_period(review_type, payload.periodKey)
    tz = load_timezone(payload.timezone)
    start, end = period.bounds(tz)
    with transaction() as conn:
        require_user(conn, user_id)
        observations = []
        for event, stored in store.load_period_events(conn, user_id, start, end):
            local = to_local(event.occurred_at, tz)
            # An entry not interpreted yet is read now (the step is pure), so a review never
            # depends on which of the queue's jobs happened to finish first; the local date is
            # always the review's own, even if the user's zone changed since.
            reading = (replace(stored, local_date=local.date()) if stored
                       else interpret_text(event.text, local))
            observations.append(Observation(event.id, reading, event.text, None,
                                            event.occurred_at))
        summary = summarize_period(period, observations)
        review_id = store.save_review(conn, user_id, review_type, period.key, tz.key, start, end,
                                      summary)
        target = None
        next_job = None
        # A weekly review enqueued after its days' reviews (the demo's) names them.
        daily_reviews = sorted(r["reviewId"] for r in parent_results(job_id, conn=conn).values()
                               if isinstance(r, dict) and "reviewId" in r)
        if review_type == DAILY:
            target = next_day(period.first_day).isoformat()
            next_job = enqueue_generate_tomorrow_plan(
                {"userId": user_id, "reviewId": review_id, "targetDate": target}, conn=conn)
    return {
        "reviewId": review_id,
        "eventCount": summary["eventCount"],
        "moodTrend": summary["moodTrend"],
        "headline": summary["headline"],
        "targetDate": target,
        "next": next_job,
        **({"dailyReviews": daily_reviews} if daily_reviews else {}),
    }
