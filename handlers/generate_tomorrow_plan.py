"""GENERATE_TOMORROW_PLAN {userId, reviewId, targetDate}: build the day's plan
from the review and the user's patterns, then chain SUGGEST_UOM_UPDATE."""

from __future__ import annotations

from typing import Any

from skiplock.handlers.domain import store
from skiplock.handlers.domain.periods import parse_date
from skiplock.handlers.domain.plans import build_plan
from skiplock.handlers.payloads import GenerateTomorrowPlan
from skiplock.handlers.registry import JobResult, handler
from skiplock.handlers.steps import MissingRecord, require_owner, require_user, run_step
from skiplock.queue_core import enqueue_suggest_uom_update
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.payloads import GENERATE_TOMORROW_PLAN


@handler(GENERATE_TOMORROW_PLAN, payload=GenerateTomorrowPlan)
def generate_tomorrow_plan(payload: GenerateTomorrowPlan | dict[str, Any], job_id: str) -> JobResult:
    return run_step(GENERATE_TOMORROW_PLAN, GenerateTomorrowPlan, payload, _plan)


def _plan(payload: GenerateTomorrowPlan) -> dict[str, Any]:
    user_id, review_id = payload.userId, payload.reviewId
    target = parse_date(payload.targetDate)
    with transaction() as conn:
        require_user(conn, user_id)
        review = store.get_review(conn, review_id)
        if review is None:
            raise MissingRecord(f"review {review_id!r} does not exist")
        require_owner("review", review_id, review.user_id, user_id)
        patterns = store.load_patterns(conn, user_id, active_only=True)
        plan = build_plan(target, review.summary, list(patterns.values()))
        plan_id = store.save_plan(conn, user_id, review_id, plan)
        next_job = enqueue_suggest_uom_update({"userId": user_id, "dailyPlanId": plan_id},
                                              conn=conn)
    return {
        "dailyPlanId": plan_id,
        "targetDate": target.isoformat(),
        "focus": plan.focus,
        "items": len(plan.items),
        "next": next_job,
    }
