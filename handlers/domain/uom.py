"""SUGGEST_UOM_UPDATE's domain step: what the user's operating manual should learn.

The operating manual (UOM) is the user's own list of statements about how they
work ("Work on weekday evenings goes with low mood"). A plan item that rests on
a stable pattern (`patterns.is_stable`) which the manual does not hold yet, and
which no earlier suggestion still waiting for the user proposes, becomes a
suggestion; otherwise the step records that no update is needed and why.
`suggest_update` is what a model-backed suggester would replace.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skiplock.handlers.domain.model import PatternRule
from skiplock.handlers.domain.patterns import context_words, is_stable, outcome_words


@dataclass(frozen=True)
class Suggestion:
    needed: bool
    reason: str
    pattern: PatternRule | None = None
    statement: str | None = None


def statement_for(rule: PatternRule) -> str:
    where = context_words(rule.context)
    return (f"{rule.tag.capitalize()}{' ' + where if where else ''} tends to go with "
            f"{outcome_words(rule.outcome)} for me "
            f"({rule.support} of {rule.occurrences} times, confidence {rule.confidence:.0%}).")


def suggest_update(
    items: Sequence[Mapping[str, Any]],
    patterns: Mapping[str, PatternRule],
    in_manual: Collection[str],
    already_proposed: Collection[str],
) -> Suggestion:
    """One suggestion for the plan's `items`; `patterns` by id, the other two by pattern key."""
    behind = [patterns[i["patternId"]] for i in items if i.get("patternId") in patterns]
    if not behind:
        return Suggestion(False, "the plan rests on no pattern")
    stable = [r for r in behind if is_stable(r)]
    if not stable:
        return Suggestion(False, "no pattern behind the plan is stable yet")
    new = [r for r in stable if r.key not in in_manual and r.key not in already_proposed]
    if not new:
        return Suggestion(False, "the manual already holds (or was offered) every stable "
                                 "pattern behind the plan")
    best = max(new, key=lambda r: (r.support * r.confidence, r.key))
    return Suggestion(True, "a stable pattern the manual does not hold yet", best,
                      statement_for(best))
