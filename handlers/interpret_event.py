"""INTERPRET_EVENT {eventId}: read one journal entry, then chain DETECT_PATTERNS."""

from __future__ import annotations

from typing import Any

from skiplock.handlers.domain import store
from skiplock.handlers.domain.interpret import METHOD, interpret_text
from skiplock.handlers.domain.periods import load_timezone, to_local
from skiplock.handlers.payloads import InterpretEvent
from skiplock.handlers.registry import JobResult, handler
from skiplock.handlers.steps import MissingRecord, require_user, run_step
from skiplock.queue_core import enqueue_detect_patterns
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.payloads import INTERPRET_EVENT


@handler(INTERPRET_EVENT, payload=InterpretEvent)
def interpret_event(payload: InterpretEvent | dict[str, Any], job_id: str) -> JobResult:
    return run_step(INTERPRET_EVENT, InterpretEvent, payload, _interpret)


def _interpret(payload: InterpretEvent) -> dict[str, Any]:
    event_id = payload.eventId
    with transaction() as conn:
        event = store.get_event(conn, event_id)
        if event is None:
            raise MissingRecord(f"event {event_id!r} does not exist")
        user = require_user(conn, event.user_id)
        try:
            tz = load_timezone(user.timezone)
        except ValueError as exc:
            raise InvalidJob(f"user {user.id!r}: {exc}") from None
        # The wall clock of the user, not of the server: 23:30 in Paris is that evening there.
        reading = interpret_text(event.text, to_local(event.occurred_at, tz))
        interpretation_id = store.save_interpretation(conn, event, reading, METHOD)
        next_job = enqueue_detect_patterns(
            {"userId": event.user_id, "triggerEventId": event.id,
             "interpretationId": interpretation_id},
            conn=conn,
        )
    return {
        "interpretationId": interpretation_id,
        "mood": reading.mood,
        "moodScore": reading.mood_score,
        "energy": reading.energy,
        "tags": list(reading.tags),
        "people": list(reading.people),
        "timeOfDay": reading.time_of_day,
        "localDate": reading.local_date.isoformat(),
        "next": next_job,
    }
