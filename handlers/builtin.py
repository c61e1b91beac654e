"""Registers the built-in job types (the original service's six, and BACKFILL_REVIEWS):
importing each module registers its handler.

`builtin_types()` names those whose registration is still the built-in one: an
application that registers its own handler for one of them (a later
registration replaces an earlier one) has replaced it. Routing uses it
(pool/served.py): the built-in handlers need their stand-in domain tables, an
application's own do not.
"""

from __future__ import annotations

from skiplock.handlers import (  # noqa: F401
    backfill_reviews,
    detect_patterns,
    generate_insights,
    generate_review,
    generate_tomorrow_plan,
    interpret_event,
    suggest_uom_update,
)
from skiplock.handlers.registry import Registration, get_registration
from skiplock.queue_core.payloads import BUILTIN_TYPES

# What the imports above registered, kept to tell a replacement apart.
_BUILTIN: dict[str, Registration] = {
    job_type: registration
    for job_type in (*BUILTIN_TYPES, backfill_reviews.BACKFILL_REVIEWS)
    if (registration := get_registration(job_type)) is not None
}


def builtin_types() -> frozenset[str]:
    """The types whose handler is still the built-in one (not replaced, not unregistered)."""
    return frozenset(t for t, registration in _BUILTIN.items()
                     if get_registration(t) is registration)
