"""The lexicon that INTERPRET_EVENT reads a journal entry with.

Words are matched on lower-cased tokens (a trailing `*` matches any ending, so
`stress*` covers stressed, stressful). Mood words carry a weight from -3 to 3;
a negation among the two tokens before a word flips its sign and an
intensifier before it multiplies it by 1.5. An entry that names a person (not
a relation such as "mom") is also tagged `social`. The lists are deliberately small
and plain: the point is a deterministic, inspectable baseline that a model can
replace behind the same function.
"""

from __future__ import annotations

MOOD_WORDS: dict[str, float] = {
    # positive
    "happy": 2, "glad": 2, "great": 2, "good": 1, "nice": 1, "fun": 2, "enjoy*": 2,
    "love*": 3, "lovely": 2, "calm": 2, "relax*": 2, "peaceful": 2, "grateful": 3,
    "thankful": 2, "proud": 2, "excited": 2, "joy*": 3, "content": 1, "amazing": 3,
    "wonderful": 3, "energized": 1, "refreshed": 2, "laugh*": 2, "smil*": 1,
    "satisf*": 2, "accomplish*": 2, "better": 1, "awesome": 3, "cozy": 1,
    # negative
    "sad": -2, "tired": -1, "exhausted": -2, "stress*": -2, "anxious": -2, "anxiety": -2,
    "worried": -2, "worry": -2, "angry": -3, "annoyed": -2, "frustrat*": -2,
    "overwhelm*": -3, "lonely": -2, "bored": -1, "boring": -1, "drained": -2, "bad": -2,
    "awful": -3, "terrible": -3, "upset": -2, "cried": -2, "cry*": -2, "hate*": -3,
    "irritat*": -2, "miserable": -3, "sick": -2, "headache": -2, "argu*": -2,
    "fight": -2, "fought": -2, "late": -1, "guilty": -2, "nervous": -2, "worse": -2,
}

NEGATIONS = frozenset({"not", "no", "never", "hardly", "barely", "without", "isn't", "wasn't",
                       "don't", "didn't", "doesn't", "wasnt", "didnt", "dont", "nothing"})
INTENSIFIERS = frozenset({"very", "really", "so", "extremely", "super", "totally", "incredibly"})

ENERGY_HIGH = ("energ*", "productive", "active", "alert", "pumped", "motivated", "refreshed",
               "rested", "focused", "strong", "lively")
ENERGY_LOW = ("tired", "exhausted", "drained", "sleepy", "lazy", "sluggish", "fatigue*",
              "worn", "burn*", "groggy", "lethargic", "sick")

ACTIVITY_TAGS: dict[str, tuple[str, ...]] = {
    "work": ("work*", "meeting*", "office", "deadline*", "boss", "email*", "project*",
             "client*", "colleague*", "coworker*", "presentation*"),
    "exercise": ("run", "ran", "running", "gym", "workout*", "yoga", "swim*", "bike", "biking",
                 "cycling", "training", "exercis*", "climb*", "tennis", "football"),
    "social": ("friend*", "party", "drinks", "hangout", "hung", "brunch", "bar", "gathering"),
    "family": ("mom", "mum", "dad", "mother", "father", "kid*", "family", "sister", "brother",
               "parents", "son", "daughter", "grandma", "grandpa"),
    "sleep": ("sleep*", "slept", "nap*", "insomnia", "bed", "woke"),
    "food": ("cook*", "lunch", "breakfast", "dinner", "meal*", "ate", "restaurant", "baking",
             "baked"),
    "screens": ("tv", "netflix", "phone", "scroll*", "gaming", "games", "youtube", "series",
                "instagram", "tiktok"),
    "outdoors": ("park", "walk*", "hike", "hiking", "beach", "garden*", "forest", "outside",
                 "sun", "sunshine", "nature"),
    "learning": ("read", "reading", "book*", "course", "stud*", "learn*", "lesson*"),
    "chores": ("clean*", "laundry", "groceries", "dishes", "chores", "tidy*", "errand*"),
    "commute": ("commute", "traffic", "train", "bus", "subway", "metro", "drive", "drove"),
    "creative": ("paint*", "draw*", "guitar", "piano", "music", "writing", "wrote", "photo*"),
}

# Words naming a person by their relation; the tag is what a pattern talks about.
RELATIONS = ("mom", "mum", "dad", "mother", "father", "sister", "brother", "wife", "husband",
             "partner", "boyfriend", "girlfriend", "boss", "manager", "colleague", "roommate",
             "son", "daughter", "grandma", "grandpa", "therapist", "coach", "neighbor")

# Words that introduce a person's name ("lunch with Sam", "called Alex").
NAME_CUES = frozenset({"with", "met", "saw", "called", "visited", "texted", "and", "meeting",
                       "to", "from", "helped", "hugged", "messaged"})

# Capitalised words that are never names.
NOT_NAMES = frozenset({"I", "I'm", "I've", "Today", "Tonight", "Monday", "Tuesday", "Wednesday",
                       "Thursday", "Friday", "Saturday", "Sunday", "The", "A", "My", "We",
                       "It", "This", "That", "Then", "But", "And", "So", "After", "Before",
                       "Netflix", "YouTube", "Instagram", "TikTok", "Zoom", "Slack"})

# Phrases in the text that say when something happened, overriding the clock.
TIME_HINTS: dict[str, tuple[str, ...]] = {
    "morning": ("this morning", "in the morning", "at breakfast"),
    "afternoon": ("this afternoon", "in the afternoon", "after lunch"),
    "evening": ("this evening", "in the evening", "after work", "at dinner"),
    "night": ("tonight", "last night", "at night", "midnight"),
}
