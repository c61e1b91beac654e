"""GENERATE_REVIEW's domain step: one period of a user's journal, summed up.

The caller hands over the observations whose events happened inside the
period's local bounds; this module only counts and compares. The mood trend of
a day compares its first and second half (in event order); that of a week or a
month is the least-squares slope of the daily means across its days.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from statistics import mean
from typing import Any

from skiplock.handlers.domain.model import Observation
from skiplock.handlers.domain.periods import DAILY, Period

TREND_THRESHOLD = 0.1  # change of mood, on the -1..1 scale, across the period
TOP = 3
HIGHLIGHT_CHARS = 140


def _order(obs: Observation) -> tuple[datetime | str, str]:
    return (obs.occurred_at or obs.reading.local_date.isoformat(), obs.event_id)


def mood_trend(period: Period, observations: Sequence[Observation]) -> str:
    """"rising", "falling", "steady", or "unknown" when there is too little to tell."""
    if period.type == DAILY:
        scores = [o.reading.mood_score for o in sorted(observations, key=_order)]
        if len(scores) < 2:
            return "unknown"
        half = len(scores) // 2
        change = mean(scores[len(scores) - half:]) - mean(scores[:half])
    else:
        by_day: dict[int, list[float]] = {}
        for obs in observations:
            index = (obs.reading.local_date - period.first_day).days
            by_day.setdefault(index, []).append(obs.reading.mood_score)
        if len(by_day) < 2:
            return "unknown"
        xs = sorted(by_day)
        ys = [mean(by_day[x]) for x in xs]
        mx, my = mean(xs), mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs)
        change = slope * (len(period.days) - 1)
    if change >= TREND_THRESHOLD:
        return "rising"
    if change <= -TREND_THRESHOLD:
        return "falling"
    return "steady"


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= HIGHLIGHT_CHARS else text[:HIGHLIGHT_CHARS - 1] + "…"


def summarize_period(period: Period, observations: Sequence[Observation]) -> dict[str, Any]:
    """The review's content as JSON-ready data."""
    ordered = sorted(observations, key=_order)
    scores = [o.reading.mood_score for o in ordered]
    tags = Counter(t for o in ordered for t in o.reading.tags)
    people = Counter(p for o in ordered for p in o.reading.people)
    energy = Counter(o.reading.energy for o in ordered)
    days_with_entries = sorted({o.reading.local_date for o in ordered})
    highlights = []
    if ordered:
        best = max(ordered, key=lambda o: (o.reading.mood_score, o.event_id))
        worst = min(ordered, key=lambda o: (o.reading.mood_score, o.event_id))
        if best.reading.mood == "positive":
            highlights.append({"kind": "best", "eventId": best.event_id,
                               "date": best.reading.local_date.isoformat(),
                               "text": _snippet(best.text)})
        if worst.reading.mood == "negative":
            highlights.append({"kind": "hardest", "eventId": worst.event_id,
                               "date": worst.reading.local_date.isoformat(),
                               "text": _snippet(worst.text)})
    summary: dict[str, Any] = {
        "eventCount": len(ordered),
        "daysWithEntries": len(days_with_entries),
        "moodAverage": round(mean(scores), 3) if scores else None,
        "moodTrend": mood_trend(period, ordered),
        "moodCounts": dict(sorted(Counter(o.reading.mood for o in ordered).items())),
        "energyCounts": dict(sorted(energy.items())),
        "topTags": [{"tag": t, "count": c} for t, c in _top(tags)],
        "topPeople": [{"person": p, "count": c} for p, c in _top(people)],
        "highlights": highlights,
    }
    summary["headline"] = headline(period, summary)
    return summary


def _top(counter: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:TOP]


def headline(period: Period, summary: dict[str, Any]) -> str:
    if not summary["eventCount"]:
        return f"No entries for {period.key}."
    average = summary["moodAverage"]
    tone = "good" if average >= 0.15 else "hard" if average <= -0.15 else "mixed"
    tags = ", ".join(t["tag"] for t in summary["topTags"]) or "nothing in particular"
    entries = summary["eventCount"]
    return (f"A {tone} {_period_noun(period)} ({entries} "
            f"entr{'y' if entries == 1 else 'ies'}, mood {summary['moodTrend']}), "
            f"mostly {tags}.")


def _period_noun(period: Period) -> str:
    return {"DAILY": "day", "WEEKLY": "week", "MONTHLY": "month"}[period.type]
