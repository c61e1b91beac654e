"""DETECT_PATTERNS's domain step: recurring associations in a user's readings.

A rule says that an activity tag, in a context (weekday or weekend, a part of
the day, or both, or any time), goes with an outcome (low or good mood, low or
high energy). It is kept when it has enough support (observations with tag,
context and outcome), confidence (support over the observations with tag and
context) and lift (confidence over the outcome's base rate: a tag that goes
with low mood only as often as everything else does says nothing). A rule in a
narrower context is kept only when it is clearly sharper than a broader one,
so "work goes with low mood" does not come back eight times.

`mine_patterns` is the function a model-backed miner would replace;
`compare` turns what was mined and what was stored into the original
service's `PatternOutcome`.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import combinations

from skiplock.handlers.domain.model import Observation, PatternRule, Reading

MIN_SUPPORT = 3
MIN_CONFIDENCE = 0.6
MIN_LIFT = 1.2
SHARPER_BY = 0.1  # how much more confident a narrower context must be to earn its own rule
EVOLVED_BY = 0.1  # a change of confidence this large means the pattern evolved
STABLE_SUPPORT = 5
STABLE_CONFIDENCE = 0.7
EVIDENCE_KEPT = 50  # the most recent supporting events a pattern row keeps

ACTIVE = "ACTIVE"
FADED = "FADED"


class PatternOutcome(enum.StrEnum):
    """What one run of DETECT_PATTERNS did, as the original service's PatternOutcome names it."""

    CREATED_NEW_PATTERN = "CREATED_NEW_PATTERN"
    EVOLVED_PATTERN = "EVOLVED_PATTERN"
    REINFORCED_PATTERN = "REINFORCED_PATTERN"
    NO_PATTERN = "NO_PATTERN"


# The original service's trigger type for GENERATE_INSIGHTS, by outcome (the others chain nothing).
INSIGHT_TRIGGERS = {
    PatternOutcome.CREATED_NEW_PATTERN: "pattern_created",
    PatternOutcome.EVOLVED_PATTERN: "pattern_evolved",
}


def outcomes_of(reading: Reading) -> list[str]:
    found = []
    if reading.mood != "neutral":
        found.append(f"mood:{reading.mood}")
    if reading.energy != "medium":
        found.append(f"energy:{reading.energy}")
    return found


def contexts_of(reading: Reading) -> list[tuple[str, ...]]:
    parts = (reading.day_kind, reading.time_of_day)
    return [(), (parts[0],), (parts[1],), parts]


def rule_key(tag: str, context: tuple[str, ...], outcome: str) -> str:
    return f"{tag}|{'+'.join(context) or 'any'}|{outcome}"


_OUTCOME_WORDS = {
    "mood:negative": "low mood",
    "mood:positive": "a good mood",
    "energy:low": "low energy",
    "energy:high": "high energy",
}
_PLURAL = {"morning": "mornings", "afternoon": "afternoons", "evening": "evenings",
           "night": "nights"}


def context_words(context: tuple[str, ...]) -> str:
    """("weekday", "evening") -> "on weekday evenings"; () -> ""."""
    if not context:
        return ""
    if len(context) == 2:
        return f"on {context[0]} {_PLURAL[context[1]]}"
    if context[0] in ("weekday", "weekend"):
        return f"on {context[0]}s"
    return "at night" if context[0] == "night" else f"in the {context[0]}"


def outcome_words(outcome: str) -> str:
    return _OUTCOME_WORDS.get(outcome, outcome)


def describe(tag: str, context: tuple[str, ...], outcome: str, support: int, total: int) -> str:
    where = context_words(context)
    return (f"{tag}{' ' + where if where else ''} goes with {outcome_words(outcome)} "
            f"({support} of {total} times)")


def mine_patterns(observations: Iterable[Observation]) -> list[PatternRule]:
    """Every rule the observations (oldest first) support, strongest first, ties by key."""
    observations = list(observations)
    if not observations:
        return []
    base: dict[str, int] = defaultdict(int)
    occurrences: dict[tuple[str, tuple[str, ...]], int] = defaultdict(int)
    support: dict[tuple[str, tuple[str, ...], str], list[str]] = defaultdict(list)
    for obs in observations:
        outcomes = outcomes_of(obs.reading)
        for outcome in outcomes:
            base[outcome] += 1
        for tag in obs.reading.tags:
            for context in contexts_of(obs.reading):
                occurrences[(tag, context)] += 1
                for outcome in outcomes:
                    support[(tag, context, outcome)].append(obs.event_id)
    total = len(observations)
    candidates: dict[tuple[str, tuple[str, ...], str], PatternRule] = {}
    for (tag, context, outcome), events in support.items():
        seen = occurrences[(tag, context)]
        confidence = len(events) / seen
        lift = confidence / (base[outcome] / total)
        if len(events) < MIN_SUPPORT or confidence < MIN_CONFIDENCE or lift < MIN_LIFT:
            continue
        candidates[(tag, context, outcome)] = PatternRule(
            key=rule_key(tag, context, outcome),
            tag=tag,
            context=context,
            outcome=outcome,
            support=len(events),
            occurrences=seen,
            confidence=round(confidence, 3),
            lift=round(lift, 3),
            description=describe(tag, context, outcome, len(events), seen),
            evidence=tuple(events[-EVIDENCE_KEPT:]),
        )
    kept = [rule for (tag, context, outcome), rule in candidates.items()
            if not _has_broader_rule(candidates, tag, context, outcome, rule.confidence)]
    return sorted(kept, key=lambda r: (-r.support * r.confidence, r.key))


def _has_broader_rule(
    candidates: Mapping[tuple[str, tuple[str, ...], str], PatternRule],
    tag: str, context: tuple[str, ...], outcome: str, confidence: float,
) -> bool:
    for size in range(len(context)):
        for broader in combinations(context, size):
            rule = candidates.get((tag, broader, outcome))
            if rule is not None and confidence < rule.confidence + SHARPER_BY:
                return True
    return False


@dataclass(frozen=True)
class Change:
    kind: str  # "created", "evolved", "reinforced", "faded", "unchanged"
    rule: PatternRule


@dataclass(frozen=True)
class Comparison:
    outcome: PatternOutcome
    changes: tuple[Change, ...]
    pattern_key: str | None  # the pattern the outcome is about

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)


def compare(
    mined: Iterable[PatternRule],
    stored: Mapping[str, PatternRule],
    trigger_event_id: str | None = None,
) -> Comparison:
    """How `mined` changes the `stored` patterns (by key), and the outcome to report.

    The outcome is the strongest change (created, then evolved, then
    reinforced); its pattern is one the trigger event is evidence of when
    there is one, so the insights that follow talk about what just happened.
    """
    changes: list[Change] = []
    seen = set()
    for rule in mined:
        seen.add(rule.key)
        old = stored.get(rule.key)
        if old is None:
            changes.append(Change("created", rule))
        elif old.status != ACTIVE or abs(rule.confidence - old.confidence) >= EVOLVED_BY:
            changes.append(Change("evolved", replace(rule, id=old.id)))
        elif rule.support > old.support:
            changes.append(Change("reinforced", replace(rule, id=old.id)))
        else:
            changes.append(Change("unchanged", replace(rule, id=old.id)))
    for key, old in sorted(stored.items()):
        if key not in seen and old.status == ACTIVE:
            changes.append(Change("faded", replace(old, status=FADED)))
    for kind, outcome in (("created", PatternOutcome.CREATED_NEW_PATTERN),
                          ("evolved", PatternOutcome.EVOLVED_PATTERN),
                          ("reinforced", PatternOutcome.REINFORCED_PATTERN)):
        relevant = [c.rule for c in changes if c.kind == kind]
        if relevant:
            about = next((r for r in relevant if trigger_event_id in r.evidence), relevant[0])
            return Comparison(outcome, tuple(changes), about.key)
    return Comparison(PatternOutcome.NO_PATTERN, tuple(changes), None)


def is_stable(rule: PatternRule) -> bool:
    """Seen often and reliably enough to belong in the user's operating manual."""
    return (rule.status == ACTIVE and rule.support >= STABLE_SUPPORT
            and rule.confidence >= STABLE_CONFIDENCE)
