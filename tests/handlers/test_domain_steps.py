"""Insights, reviews, plans and manual suggestions (pure, no database)."""

from dataclasses import replace
from datetime import date, timedelta

from skiplock.handlers.domain.insights import QUESTIONS, answer_questions
from skiplock.handlers.domain.patterns import mine_patterns
from skiplock.handlers.domain.periods import parse_period
from skiplock.handlers.domain.plans import build_plan
from skiplock.handlers.domain.reviews import summarize_period
from skiplock.handlers.domain.uom import suggest_update
from tests.handlers.domain_builders import obs
from tests.handlers.test_domain_patterns import MONDAY, weekday_evening_work


def test_questions_answered_only_with_enough_evidence():
    few = weekday_evening_work(1)[:3]
    answers, explored = answer_questions(few, mine_patterns(few))
    assert explored == len(QUESTIONS)
    assert answers == []

    many = weekday_evening_work(3)
    answers, _ = answer_questions(many, mine_patterns(many))
    by_question = {a.question_key: a for a in answers}
    assert by_question["what_drains_you"].answer_key == "work|any|mood:negative"
    assert by_question["what_lifts_mood"].answer_key == "outdoors|any|mood:positive"
    assert by_question["weekday_vs_weekend"].answer_key == "weekend"
    assert by_question["most_frequent_activity"].answer_key == "food"  # ties: by name
    assert "who_lifts_you" not in by_question


def test_people_who_lift():
    data = weekday_evening_work(2) + [
        obs(900 + i, MONDAY + timedelta(days=i), "evening", 0.9, ["social"], people=["Sam"])
        for i in range(3)
    ]
    answers, _ = answer_questions(data, mine_patterns(data))
    assert {a.question_key: a.answer_key for a in answers}["who_lifts_you"] == "Sam"


def test_daily_review_counts_trend_tags_and_highlights():
    day = date(2026, 3, 3)
    data = [
        obs(1, day, "morning", 0.6, ["exercise"], text="Great run"),
        obs(2, day, "afternoon", 0.1, ["work"]),
        obs(3, day, "evening", -0.5, ["work"], energy="low", text="Awful meeting"),
    ]
    summary = summarize_period(parse_period("DAILY", "2026-03-03"), data)
    assert summary["eventCount"] == 3
    assert summary["moodTrend"] == "falling"
    assert summary["topTags"][0] == {"tag": "work", "count": 2}
    assert [h["kind"] for h in summary["highlights"]] == ["best", "hardest"]
    assert summary["highlights"][1]["text"] == "Awful meeting"
    assert "day" in summary["headline"]


def test_weekly_trend_uses_the_slope_of_daily_means():
    days = parse_period("WEEKLY", "2026-W10").days
    rising = [obs(i, d, "evening", -0.5 + 0.15 * i) for i, d in enumerate(days)]
    assert summarize_period(parse_period("WEEKLY", "2026-W10"), rising)["moodTrend"] == "rising"
    empty = summarize_period(parse_period("MONTHLY", "2026-03"), [])
    assert empty["eventCount"] == 0 and empty["moodTrend"] == "unknown"


def test_plan_uses_patterns_that_fit_the_target_day():
    rules = [replace(r, id=f"p{i}") for i, r in enumerate(mine_patterns(weekday_evening_work(3)))]
    weekday_only = [replace(rules[0], context=("weekday", "evening"),
                            key="work|weekday+evening|mood:negative")]
    saturday = date(2026, 3, 28)
    tuesday = date(2026, 3, 31)
    assert not any(i.pattern_id for i in build_plan(saturday, {}, weekday_only).items)
    plan = build_plan(tuesday, {"moodTrend": "falling", "energyCounts": {"low": 2}}, rules)
    kinds = [i.kind for i in plan.items]
    assert "lean_in" in kinds and "plan_around" in kinds
    assert kinds.count("recover") == 2
    assert kinds[-1] == "reflect"
    assert plan.focus.startswith("Tuesday")


def test_uom_suggestion_only_for_stable_patterns_not_yet_held():
    rules = {f"p{i}": replace(r, id=f"p{i}")
             for i, r in enumerate(mine_patterns(weekday_evening_work(3)))}
    items = [{"patternId": pid} for pid in rules]
    suggestion = suggest_update(items, rules, in_manual=set(), already_proposed=set())
    assert suggestion.needed and suggestion.pattern is not None
    assert suggestion.pattern.key == "work|any|mood:negative"
    assert "for me" in (suggestion.statement or "")

    held = {r.key for r in rules.values()}
    assert not suggest_update(items, rules, held, set()).needed
    assert not suggest_update(items, rules, set(), held).needed
    assert not suggest_update([{"patternId": None}], rules, set(), set()).needed
    weak = {k: replace(r, support=2) for k, r in rules.items()}
    assert "stable" in suggest_update(items, weak, set(), set()).reason
