"""A few weeks of believable journal entries, for the demo and the tests.

The entries carry patterns on purpose (work on weekday evenings drains, a
weekend morning outside lifts, time with Sam goes well, late screens tire), so
that the chain has something to find. Seeded: the same arguments give the same
entries.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAY_EVENING = (
    "Long day at work, stressed about the deadline. Really tired.",
    "Another meeting that ran late. Frustrated and drained.",
    "Work was overwhelming today, too many emails.",
    "Project review at work went badly, feeling anxious.",
    "Finished work late again, exhausted.",
    "Deadline moved up at work, worried and tired.",
    "Boss kept adding tasks at work, annoyed.",
    "Work was fine today, nice lunch with a colleague.",
)
WEEKDAY_MORNING = (
    "Quick breakfast before the commute, train was packed.",
    "Slept badly, groggy on the bus.",
    "Short walk in the sunshine, the park was quiet.",
    "Coffee and a book on the train this morning.",
)
WEEKEND_MORNING = (
    "Lovely run in the park this morning, felt energized!",
    "Long walk in the forest, calm and refreshed.",
    "Yoga outside in the garden, felt great.",
    "Hike with friends, amazing views, so happy.",
)
WEEKEND_EVENING = (
    "Dinner with Sam, laughed a lot.",
    "Cooked with Sam and watched a film, cozy evening.",
    "Drinks with friends, fun night.",
    "Quiet evening reading a book, content.",
)
LATE_NIGHT = (
    "Scrolling my phone in bed again, tired and annoyed at myself.",
    "Too much Netflix tonight, feel sluggish.",
    "Gaming until late, exhausted.",
)


def sample_entries(
    tz: ZoneInfo, last_day: date, days: int = 21, seed: int = 7
) -> list[tuple[datetime, str]]:
    """(UTC instant, text) of entries on the `days` local days ending with `last_day`."""
    rng = random.Random(seed)
    entries: list[tuple[datetime, str]] = []
    for offset in range(days - 1, -1, -1):
        day = last_day - timedelta(days=offset)
        weekend = day.isoweekday() >= 6
        plan: list[tuple[int, tuple[str, ...]]] = [
            (rng.randint(7, 9), WEEKEND_MORNING if weekend else WEEKDAY_MORNING),
            (rng.randint(18, 21), WEEKEND_EVENING if weekend else WEEKDAY_EVENING),
        ]
        if rng.random() < 0.4:
            plan.append((23, LATE_NIGHT))  # 23:xx local: the day's own, whatever the UTC date
        for hour, texts in plan:
            local = datetime.combine(day, time(hour, rng.randint(0, 59)), tzinfo=tz)
            entries.append((local.astimezone(UTC), rng.choice(texts)))
    return entries
