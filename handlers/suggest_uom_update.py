"""SUGGEST_UOM_UPDATE {userId, dailyPlanId}: propose an entry for the user's
operating manual when the plan rests on a stable pattern it does not hold, or
record that none is needed. The end of the chain."""

from __future__ import annotations

from typing import Any

from skiplock.handlers.domain import store
from skiplock.handlers.domain.uom import suggest_update
from skiplock.handlers.payloads import SuggestUomUpdate
from skiplock.handlers.registry import JobResult, handler
from skiplock.handlers.steps import MissingRecord, require_owner, require_user, run_step
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.payloads import SUGGEST_UOM_UPDATE


@handler(SUGGEST_UOM_UPDATE, payload=SuggestUomUpdate)
def suggest_uom_update(payload: SuggestUomUpdate | dict[str, Any], job_id: str) -> JobResult:
    return run_step(SUGGEST_UOM_UPDATE, SuggestUomUpdate, payload, _suggest)


def _suggest(payload: SuggestUomUpdate) -> dict[str, Any]:
    user_id, plan_id = payload.userId, payload.dailyPlanId
    with transaction() as conn:
        require_user(conn, user_id)
        plan = store.get_plan(conn, plan_id)
        if plan is None:
            raise MissingRecord(f"daily plan {plan_id!r} does not exist")
        require_owner("daily plan", plan_id, plan.user_id, user_id)
        # Plans of the same user suggested at once would each offer the same pattern.
        store.lock_user(conn, "uom", user_id)
        suggestion = suggest_update(
            plan.items, store.patterns_by_id(conn, user_id),
            store.manual_keys(conn, user_id), store.proposed_keys(conn, user_id, plan_id),
        )
        suggestion_id = store.save_suggestion(conn, user_id, plan_id, suggestion)
    return {
        "suggestionId": suggestion_id,
        "suggestionGenerated": suggestion.needed,
        "patternKey": suggestion.pattern.key if suggestion.pattern else None,
        "reason": suggestion.reason,
    }
