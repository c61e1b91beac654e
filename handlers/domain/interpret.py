"""INTERPRET_EVENT's domain step: a journal entry in, a `Reading` out.

`interpret_text` is the function a model-backed interpreter would replace: it
sees the text and the local time the event happened at, and nothing else.
"""

from __future__ import annotations

import re
from datetime import datetime

from skiplock.handlers.domain import lexicon
from skiplock.handlers.domain.model import Reading

_TOKEN = re.compile(r"[A-Za-z][A-Za-z']*")
METHOD = "lexicon-v1"


def _matches(token: str, patterns: tuple[str, ...] | list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("*"):
            if token.startswith(pattern[:-1]):
                return True
        elif token == pattern:
            return True
    return False


def _mood_weight(token: str) -> float | None:
    if token in lexicon.MOOD_WORDS:
        return lexicon.MOOD_WORDS[token]
    for pattern, weight in lexicon.MOOD_WORDS.items():
        if pattern.endswith("*") and token.startswith(pattern[:-1]):
            return weight
    return None


def mood_of(tokens: list[str]) -> float:
    """A score in [-1, 1]: the weighted mood words, negations and intensifiers applied."""
    total = 0.0
    hits = 0
    for i, token in enumerate(tokens):
        weight = _mood_weight(token)
        if weight is None:
            continue
        before = tokens[max(0, i - 2):i]
        if any(word in lexicon.NEGATIONS for word in before):
            weight = -weight * 0.75  # "not happy" is less sad than "sad"
        if before and before[-1] in lexicon.INTENSIFIERS:
            weight *= 1.5
        total += weight
        hits += 1
    if not hits:
        return 0.0
    # Dividing by sqrt(hits) lets several words strengthen the score without averaging it away.
    score = total / (3.0 * hits ** 0.5)
    return round(max(-1.0, min(1.0, score)), 3)


def mood_label(score: float) -> str:
    if score <= -0.15:
        return "negative"
    if score >= 0.15:
        return "positive"
    return "neutral"


def energy_of(tokens: list[str]) -> str:
    high = sum(1 for i, t in enumerate(tokens) if _matches(t, lexicon.ENERGY_HIGH)
               and not any(w in lexicon.NEGATIONS for w in tokens[max(0, i - 2):i]))
    low = sum(1 for t in tokens if _matches(t, lexicon.ENERGY_LOW))
    if high > low:
        return "high"
    if low > high:
        return "low"
    return "medium"


def tags_of(tokens: list[str]) -> tuple[str, ...]:
    return tuple(tag for tag, words in lexicon.ACTIVITY_TAGS.items()
                 if any(_matches(t, words) for t in tokens))


def people_of(text: str) -> tuple[str, ...]:
    """Names introduced by a cue word ("dinner with Sam") and relation words ("my sister")."""
    words = _TOKEN.findall(text)
    found: list[str] = []
    for i, word in enumerate(words):
        lower = word.lower()
        if lower in lexicon.RELATIONS:
            found.append(lower)
        elif (
            i > 0
            and word[0].isupper()
            and word not in lexicon.NOT_NAMES
            and words[i - 1].lower() in lexicon.NAME_CUES
            and (words[i - 1].lower() != "and" or (i > 1 and words[i - 2][0].isupper()))
        ):
            found.append(word)
    return tuple(dict.fromkeys(found))  # first mention first, no repeats


def time_of_day_of(text: str, local_time: datetime) -> str:
    """The part of the day the text names, else the one of the local clock."""
    lowered = text.lower()
    for part, phrases in lexicon.TIME_HINTS.items():
        if any(phrase in lowered for phrase in phrases):
            return part
    hour = local_time.hour
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


def interpret_text(text: str, local_time: datetime) -> Reading:
    """Read one journal entry written at `local_time` (the user's wall clock)."""
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    score = mood_of(tokens)
    people = people_of(text)
    tags = tags_of(tokens)
    if "social" not in tags and any(p not in lexicon.RELATIONS for p in people):
        # Time with someone named is time with people, whatever the activity was.
        tags = tuple(t for t in lexicon.ACTIVITY_TAGS if t in tags or t == "social")
    return Reading(
        mood_score=score,
        mood=mood_label(score),
        energy=energy_of(tokens),
        tags=tags,
        people=people,
        time_of_day=time_of_day_of(text, local_time),
        local_date=local_time.date(),
    )
