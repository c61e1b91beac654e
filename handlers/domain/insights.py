"""GENERATE_INSIGHTS's domain step: a fixed set of questions about the user.

Each question looks at the user's active patterns and readings and answers
only when the evidence suffices (at least `MIN_EVIDENCE` observations behind
the answer, and a clear difference where it compares). An answer has a stable
`answer_key`: the same answer found again is not a new insight, a different
one is. `answer_questions` is what a model-backed generator would replace.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import mean

from skiplock.handlers.domain.model import TIMES_OF_DAY, WEEKDAY, WEEKEND, Observation, PatternRule
from skiplock.handlers.domain.patterns import ACTIVE, context_words, outcome_words

MIN_EVIDENCE = 3
CLEAR_DIFFERENCE = 0.15  # on the -1..1 mood scale


@dataclass(frozen=True)
class Answer:
    question_key: str
    question: str
    answer: str
    answer_key: str
    evidence_count: int
    pattern_key: str | None = None


Question = Callable[[Sequence[Observation], Sequence[PatternRule]], Answer | None]


def _from_rules(key: str, question: str, outcomes: tuple[str, ...]) -> Question:
    def ask(observations: Sequence[Observation], rules: Sequence[PatternRule]) -> Answer | None:
        matching = [r for r in rules if r.outcome in outcomes and r.status == ACTIVE]
        if not matching:
            return None
        best = max(matching, key=lambda r: (r.support * r.confidence, r.key))
        where = context_words(best.context)
        return Answer(
            key, question,
            f"{best.tag.capitalize()}{' ' + where if where else ''}: it went with "
            f"{outcome_words(best.outcome)} {best.support} of {best.occurrences} times.",
            best.key, best.support, best.key,
        )
    return ask


def best_time_of_day(observations: Sequence[Observation], rules: Sequence[PatternRule]) -> (
        Answer | None):
    by_part: dict[str, list[float]] = defaultdict(list)
    for obs in observations:
        by_part[obs.reading.time_of_day].append(obs.reading.mood_score)
    means = {part: mean(scores) for part, scores in by_part.items()
             if len(scores) >= MIN_EVIDENCE}
    if len(means) < 2:
        return None
    order = sorted(means, key=lambda p: (-means[p], TIMES_OF_DAY.index(p)))
    best, worst = order[0], order[-1]
    if means[best] - means[worst] < CLEAR_DIFFERENCE:
        return None
    return Answer(
        "best_time_of_day", "When in the day do you feel best?",
        f"In the {best} (average mood {means[best]:+.2f}, against {means[worst]:+.2f} "
        f"in the {worst}).",
        f"{best}>{worst}", len(by_part[best]) + len(by_part[worst]),
    )


def people_who_lift(observations: Sequence[Observation], rules: Sequence[PatternRule]) -> (
        Answer | None):
    scores: dict[str, list[float]] = defaultdict(list)
    for obs in observations:
        for person in obs.reading.people:
            scores[person].append(obs.reading.mood_score)
    overall = mean(o.reading.mood_score for o in observations) if observations else 0.0
    lifts = {p: mean(s) - overall for p, s in scores.items() if len(s) >= MIN_EVIDENCE}
    if not lifts:
        return None
    person = max(lifts, key=lambda p: (lifts[p], p))
    if lifts[person] < CLEAR_DIFFERENCE:
        return None
    return Answer(
        "who_lifts_you", "Who do you feel best with?",
        f"{person}: your mood is {lifts[person]:+.2f} above your average when they are there "
        f"({len(scores[person])} entries).",
        person, len(scores[person]),
    )


def weekday_vs_weekend(observations: Sequence[Observation], rules: Sequence[PatternRule]) -> (
        Answer | None):
    kinds: dict[str, list[float]] = defaultdict(list)
    for obs in observations:
        kinds[obs.reading.day_kind].append(obs.reading.mood_score)
    if len(kinds[WEEKDAY]) < MIN_EVIDENCE or len(kinds[WEEKEND]) < MIN_EVIDENCE:
        return None
    weekday, weekend = mean(kinds[WEEKDAY]), mean(kinds[WEEKEND])
    if abs(weekday - weekend) < CLEAR_DIFFERENCE:
        verdict, key = "About the same on weekdays and weekends.", "same"
    elif weekend > weekday:
        verdict, key = "Better at weekends.", "weekend"
    else:
        verdict, key = "Better on weekdays.", "weekday"
    return Answer(
        "weekday_vs_weekend", "How do your weekdays compare with your weekends?",
        f"{verdict} (weekdays {weekday:+.2f}, weekends {weekend:+.2f})",
        key, len(kinds[WEEKDAY]) + len(kinds[WEEKEND]),
    )


def most_frequent_activity(observations: Sequence[Observation],
                           rules: Sequence[PatternRule]) -> Answer | None:
    counts = Counter(tag for obs in observations for tag in obs.reading.tags)
    if not counts:
        return None
    tag, count = min(counts.items(), key=lambda item: (-item[1], item[0]))
    if count < MIN_EVIDENCE:
        return None
    return Answer(
        "most_frequent_activity", "What fills your days most?",
        f"{tag.capitalize()}, in {count} of {len(observations)} entries.", tag, count,
    )


QUESTIONS: tuple[Question, ...] = (
    _from_rules("what_lifts_mood", "What lifts your mood?", ("mood:positive",)),
    _from_rules("what_drains_you", "What drains you?", ("mood:negative", "energy:low")),
    _from_rules("what_energizes_you", "What gives you energy?", ("energy:high",)),
    best_time_of_day,
    people_who_lift,
    weekday_vs_weekend,
    most_frequent_activity,
)


def answer_questions(
    observations: Sequence[Observation], rules: Sequence[PatternRule]
) -> tuple[list[Answer], int]:
    """The answers the evidence supports, and how many questions were explored."""
    answers = [a for ask in QUESTIONS if (a := ask(observations, rules)) is not None]
    return answers, len(QUESTIONS)
