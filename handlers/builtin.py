"""Registers the six built-in job types: importing each module registers its handler."""

from handlers import (  # noqa: F401
    detect_patterns,
    generate_insights,
    generate_review,
    generate_tomorrow_plan,
    interpret_event,
    suggest_uom_update,
)
