"""GENERATE_TOMORROW_PLAN's domain step: a plan for one day from a review and patterns.

A plan is a short list of items. Patterns whose context fits the target day
(its weekday or weekend, any part of the day) give items: one to make room
for what goes with a good mood or high energy, one to plan around what goes
with low mood or low energy. The review of the day before adds items of its
own (a falling mood, low energy). Each item that rests on a pattern names it,
which is what SUGGEST_UOM_UPDATE reads. `build_plan` is the function a
model-backed planner would replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from skiplock.handlers.domain.model import WEEKDAY, WEEKEND, PatternRule
from skiplock.handlers.domain.patterns import ACTIVE, context_words, outcome_words

GOOD_OUTCOMES = ("mood:positive", "energy:high")
HARD_OUTCOMES = ("mood:negative", "energy:low")
PER_KIND = 2


@dataclass(frozen=True)
class PlanItem:
    kind: str  # "lean_in", "plan_around", "recover", "reflect"
    text: str
    time_of_day: str | None = None
    pattern_id: str | None = None
    pattern_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "timeOfDay": self.time_of_day,
                "patternId": self.pattern_id, "patternKey": self.pattern_key}


@dataclass(frozen=True)
class Plan:
    target_date: date
    focus: str
    items: tuple[PlanItem, ...] = field(default=())


def fits_day(rule: PatternRule, day: date) -> bool:
    day_kind = WEEKEND if day.isoweekday() >= 6 else WEEKDAY
    return not any(part in (WEEKDAY, WEEKEND) and part != day_kind for part in rule.context)


def _part_of_day(rule: PatternRule) -> str | None:
    return next((p for p in rule.context if p not in (WEEKDAY, WEEKEND)), None)


def _pattern_item(kind: str, rule: PatternRule) -> PlanItem:
    where = context_words(tuple(p for p in rule.context if p not in (WEEKDAY, WEEKEND)))
    suffix = f" {where}" if where else ""
    if kind == "lean_in":
        text = (f"Make room for {rule.tag}{suffix}: it has gone with "
                f"{outcome_words(rule.outcome)} {rule.support} of {rule.occurrences} times.")
    else:
        text = (f"Plan a buffer around {rule.tag}{suffix}: it has gone with "
                f"{outcome_words(rule.outcome)} {rule.support} of {rule.occurrences} times.")
    return PlanItem(kind, text, _part_of_day(rule), rule.id, rule.key)


def build_plan(target: date, review: dict[str, Any], rules: Sequence[PatternRule]) -> Plan:
    fitting = sorted((r for r in rules if r.status == ACTIVE and fits_day(r, target)),
                     key=lambda r: (-r.support * r.confidence, r.key))
    items: list[PlanItem] = []
    good = [r for r in fitting if r.outcome in GOOD_OUTCOMES]
    hard = [r for r in fitting if r.outcome in HARD_OUTCOMES]
    items += [_pattern_item("lean_in", r) for r in _distinct_tags(good)[:PER_KIND]]
    items += [_pattern_item("plan_around", r) for r in _distinct_tags(hard)[:PER_KIND]]
    trend = review.get("moodTrend")
    energy = review.get("energyCounts") or {}
    if trend == "falling" or (review.get("moodAverage") or 0) <= -0.15:
        items.append(PlanItem("recover", "Keep the day light: one thing that matters, "
                              "and a break before the afternoon.", "morning"))
    if energy.get("low", 0) > energy.get("high", 0):
        items.append(PlanItem("recover", "Energy ran low today: wind down early tonight.",
                              "night"))
    items.append(PlanItem("reflect", "Write a line in the evening about how the day went.",
                          "evening"))
    return Plan(target, _focus(target, good, hard, review), tuple(items))


def _distinct_tags(rules: Sequence[PatternRule]) -> list[PatternRule]:
    seen: set[str] = set()
    kept = []
    for rule in rules:
        if rule.tag not in seen:
            seen.add(rule.tag)
            kept.append(rule)
    return kept


def _focus(target: date, good: Sequence[PatternRule], hard: Sequence[PatternRule],
           review: dict[str, Any]) -> str:
    day = target.strftime("%A")
    if good:
        return f"{day}: lean on {good[0].tag}."
    if hard:
        return f"{day}: go easy around {hard[0].tag}."
    return f"{day}: an ordinary day; notice what lifts you."
