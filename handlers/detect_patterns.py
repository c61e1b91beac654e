"""DETECT_PATTERNS {userId, triggerEventId, interpretationId}: mine the user's
patterns, report the original service's PatternOutcome, and chain GENERATE_INSIGHTS when a
pattern was created or evolved."""

from __future__ import annotations

from typing import Any

from skiplock.handlers.domain import store
from skiplock.handlers.domain.patterns import FADED, INSIGHT_TRIGGERS, compare, mine_patterns
from skiplock.handlers.payloads import DetectPatterns
from skiplock.handlers.registry import JobResult, handler
from skiplock.handlers.steps import MissingRecord, require_owner, require_user, run_step
from skiplock.queue_core import enqueue_generate_insights
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.payloads import DETECT_PATTERNS


# One user's pattern runs one at a time (they read and rewrite the same rows);
# other users' run beside them, and a user's backlog waits held back.
@handler(DETECT_PATTERNS, payload=DetectPatterns, concurrency=1, concurrency_key="userId")
def detect_patterns(payload: DetectPatterns | dict[str, Any], job_id: str) -> JobResult:
    return run_step(DETECT_PATTERNS, DetectPatterns, payload, _detect)


def _detect(payload: DetectPatterns) -> dict[str, Any]:
    user_id = payload.userId
    trigger_id = payload.triggerEventId
    with transaction() as conn:
        require_user(conn, user_id)
        trigger = store.get_event(conn, trigger_id)
        if trigger is None:
            raise MissingRecord(f"event {trigger_id!r} does not exist")
        require_owner("event", trigger_id, trigger.user_id, user_id)
        interpretation_id = payload.interpretationId
        if not store.interpretation_exists(conn, interpretation_id, trigger_id):
            raise MissingRecord(
                f"interpretation {interpretation_id!r} of event {trigger_id!r} does not exist")
        store.lock_user_patterns(conn, user_id)
        mined = mine_patterns(store.load_observations(conn, user_id))
        comparison = compare(mined, store.load_patterns(conn, user_id), trigger_id)
        ids: dict[str, str] = {}
        for change in comparison.changes:
            if change.kind == "faded" and change.rule.id:
                store.set_pattern_status(conn, change.rule.id, FADED)
            else:
                # An "unchanged" rule is saved too: its figures moved less than the
                # evolution threshold, and the row should still show them as they are.
                ids[change.rule.key], _ = store.save_pattern(conn, user_id, change.rule)
        pattern_id = ids.get(comparison.pattern_key or "")
        trigger_type = INSIGHT_TRIGGERS.get(comparison.outcome)
        next_job = None
        if trigger_type:
            next_job = enqueue_generate_insights(
                {"userId": user_id, "triggerType": trigger_type, "eventId": trigger_id,
                 "interpretationId": interpretation_id, "patternId": pattern_id},
                conn=conn,
            )
    return {
        "outcome": comparison.outcome.value,
        "patternId": pattern_id,
        "patternsCreated": comparison.count("created"),
        "patternsEvolved": comparison.count("evolved"),
        "patternsReinforced": comparison.count("reinforced"),
        "patternsFaded": comparison.count("faded"),
        "next": next_job,
    }
