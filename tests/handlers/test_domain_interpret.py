"""The lexicon interpreter (pure, no database)."""

from datetime import datetime

from skiplock.handlers.domain.interpret import interpret_text

EVENING = datetime(2026, 3, 3, 19, 0)


def test_negative_work_entry():
    reading = interpret_text("Long day at work, stressed about the deadline. Really tired.",
                             EVENING)
    assert reading.mood == "negative"
    assert reading.energy == "low"
    assert reading.tags == ("work",)
    assert reading.time_of_day == "evening"


def test_positive_entry_with_people_and_time_hint():
    reading = interpret_text("Lovely run in the park with Sam this morning, felt energized!",
                             EVENING)
    assert reading.mood == "positive"
    assert reading.energy == "high"
    assert reading.tags == ("exercise", "social", "outdoors")  # a named person: social
    assert reading.people == ("Sam",)
    assert reading.time_of_day == "morning"  # the text wins over the clock


def test_negation_flips_a_mood_word():
    assert interpret_text("I was happy", EVENING).mood == "positive"
    assert interpret_text("I was not happy", EVENING).mood == "negative"


def test_neutral_entry_and_relations():
    reading = interpret_text("Called my sister", EVENING)
    assert reading.mood == "neutral"
    assert reading.people == ("sister",)
    assert "family" in reading.tags


def test_names_need_a_cue_and_are_not_weekdays():
    reading = interpret_text("Met Monday with Priya and Tom. Netflix later.", EVENING)
    assert reading.people == ("Priya", "Tom")


def test_time_of_day_from_the_local_clock():
    assert interpret_text("ok", datetime(2026, 3, 3, 23, 30)).time_of_day == "night"
    assert interpret_text("ok", datetime(2026, 3, 3, 6, 0)).time_of_day == "morning"
    assert interpret_text("ok", datetime(2026, 3, 3, 13, 0)).time_of_day == "afternoon"
    assert interpret_text("ok", datetime(2026, 3, 3, 23, 30)).local_date.day == 3


def test_deterministic():
    text = "Great dinner with friends, laughed so much"
    assert interpret_text(text, EVENING) == interpret_text(text, EVENING)
