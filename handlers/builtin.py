"""Registers the built-in job types (the six of the seed, and BACKFILL_REVIEWS):
importing each module registers its handler."""

from skiplock.handlers import (  # noqa: F401
    backfill_reviews,
    detect_patterns,
    generate_insights,
    generate_review,
    generate_tomorrow_plan,
    interpret_event,
    suggest_uom_update,
)
