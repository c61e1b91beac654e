"""GENERATE_INSIGHTS {userId, triggerType, eventId?, interpretationId?, patternId?}:
answer the fixed questions the evidence supports; store each new answer once."""

from __future__ import annotations

from typing import Any

from skiplock.handlers.domain import store
from skiplock.handlers.domain.insights import answer_questions
from skiplock.handlers.payloads import GenerateInsights
from skiplock.handlers.registry import JobResult, handler
from skiplock.handlers.steps import MissingRecord, require_owner, require_user, run_step
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.payloads import GENERATE_INSIGHTS


@handler(GENERATE_INSIGHTS, payload=GenerateInsights)
def generate_insights(payload: GenerateInsights | dict[str, Any], job_id: str) -> JobResult:
    return run_step(GENERATE_INSIGHTS, GenerateInsights, payload, _generate)


def _generate(payload: GenerateInsights) -> dict[str, Any]:
    user_id = payload.userId
    with transaction() as conn:
        require_user(conn, user_id)
        event_id = payload.eventId
        if event_id:
            found = store.get_event(conn, event_id)
            if found is None:
                raise MissingRecord(f"event {event_id!r} does not exist")
            require_owner("event", event_id, found.user_id, user_id)
        pattern_id = payload.patternId
        if pattern_id and not store.pattern_exists(conn, user_id, pattern_id):
            raise MissingRecord(f"pattern {pattern_id!r} of user {user_id!r} does not exist")
        patterns = store.load_patterns(conn, user_id, active_only=True)
        answers, explored = answer_questions(store.load_observations(conn, user_id),
                                             list(patterns.values()))
        created = 0
        for answer in answers:
            behind = patterns.get(answer.pattern_key or "")
            created += store.save_insight(conn, user_id, {
                "questionKey": answer.question_key, "question": answer.question,
                "answer": answer.answer, "answerKey": answer.answer_key,
                "evidenceCount": answer.evidence_count,
                "patternId": behind.id if behind else None,
                "triggerType": payload.triggerType, "eventId": event_id,
            })
    return {
        "insightsCreated": created,
        "questionsExplored": explored,
        "questionsAnswerable": len(answers),
    }
