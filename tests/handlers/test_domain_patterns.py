"""Pattern mining and the outcome of a run (pure, no database)."""

from dataclasses import replace
from datetime import date, timedelta

from skiplock.handlers.domain.patterns import (
    PatternOutcome,
    compare,
    is_stable,
    mine_patterns,
)
from tests.handlers.domain_builders import obs

MONDAY = date(2026, 3, 2)


def weekday_evening_work(n_weeks: int):
    """Work on weekday evenings goes with low mood; weekend mornings outdoors go well."""
    out = []
    n = 0
    for week in range(n_weeks):
        for offset in range(5):
            day = MONDAY + timedelta(days=7 * week + offset)
            n += 1
            out.append(obs(n, day, "evening", -0.6 if offset != 2 else 0.3, ["work"]))
            n += 1
            out.append(obs(n, day, "afternoon", 0.0, ["food"]))
        saturday = MONDAY + timedelta(days=7 * week + 5)
        n += 1
        out.append(obs(n, saturday, "morning", 0.7, ["outdoors"], energy="high"))
    return out


def test_finds_the_association_with_support_and_confidence():
    rules = {r.key: r for r in mine_patterns(weekday_evening_work(2))}
    work = rules["work|any|mood:negative"]
    assert (work.support, work.occurrences, work.confidence) == (8, 10, 0.8)
    assert work.lift > 1.2
    assert "outdoors|any|mood:positive" not in rules  # only 2 Saturdays: too little support


def test_narrower_context_kept_only_when_sharper():
    rules = {r.key for r in mine_patterns(weekday_evening_work(3))}
    # Every work entry is a weekday evening one: the narrower rules say nothing more.
    assert "work|any|mood:negative" in rules
    assert "work|weekday+evening|mood:negative" not in rules
    assert "outdoors|any|mood:positive" in rules


def test_nothing_from_too_little_or_no_data():
    assert mine_patterns([]) == []
    assert mine_patterns(weekday_evening_work(1)[:4]) == []


def test_compare_reports_created_then_reinforced_then_evolved_then_none():
    first = mine_patterns(weekday_evening_work(2))
    result = compare(first, {})
    assert result.outcome is PatternOutcome.CREATED_NEW_PATTERN
    stored = {r.key: replace(r, id=f"p-{i}") for i, r in enumerate(first)}

    assert compare(first, stored).outcome is PatternOutcome.NO_PATTERN

    grown = [replace(r, support=r.support + 1, occurrences=r.occurrences + 1) for r in first]
    reinforced = compare(grown, stored)
    assert reinforced.outcome is PatternOutcome.REINFORCED_PATTERN
    assert all(c.rule.id for c in reinforced.changes)

    shifted = [replace(r, confidence=r.confidence - 0.15) for r in first]
    assert compare(shifted, stored).outcome is PatternOutcome.EVOLVED_PATTERN


def test_compare_prefers_a_pattern_the_trigger_supports_and_fades_lost_ones():
    rules = mine_patterns(weekday_evening_work(3))
    trigger = next(r for r in rules if r.tag == "outdoors").evidence[0]
    result = compare(rules, {}, trigger_event_id=trigger)
    assert result.pattern_key is not None and result.pattern_key.startswith("outdoors|")
    stored = {r.key: replace(r, id="x") for r in rules}
    faded = compare([], stored)
    assert faded.outcome is PatternOutcome.NO_PATTERN
    assert faded.count("faded") == len(rules)


def test_stability_threshold():
    rule = mine_patterns(weekday_evening_work(2))[0]
    assert is_stable(rule)
    assert not is_stable(replace(rule, support=4))
    assert not is_stable(replace(rule, status="FADED"))
