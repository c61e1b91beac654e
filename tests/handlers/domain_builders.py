"""Small builders of domain values for the pure tests."""

from datetime import UTC, date, datetime, time

from skiplock.handlers.domain.interpret import mood_label
from skiplock.handlers.domain.model import Observation, Reading

_TIMES = {"morning": 8, "afternoon": 14, "evening": 19, "night": 23}


def obs(n: int, day: date, time_of_day: str, mood: float, tags=(), energy="medium",
        people=(), text="") -> Observation:
    reading = Reading(mood_score=mood, mood=mood_label(mood), energy=energy, tags=tuple(tags),
                      people=tuple(people), time_of_day=time_of_day, local_date=day)
    at = datetime.combine(day, time(_TIMES[time_of_day]), tzinfo=UTC)
    return Observation(f"e{n:03d}", reading, text or f"entry {n}", f"i{n:03d}", at)
