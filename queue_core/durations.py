"""Durations as people write them: 90, 30s, 5m, 2h, 7d, 1h30m."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from skiplock.queue_core.errors import InvalidJob

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float | int | timedelta) -> float:
    """Seconds in `text`; a bare number is seconds. Raises InvalidJob naming the bad text.

    A duration is finite, not negative, and at most a century: nan, inf and
    -5 are refused here rather than misbehaving later (a sleep that raises, a
    cutoff in the future, an interval PostgreSQL cannot hold).
    """
    if isinstance(text, timedelta):
        seconds = text.total_seconds()
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        seconds = _parse_text(str(text))
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise InvalidJob(f"not a duration: {text!r} (must be between 0 and 100 years)")
    return seconds


MAX_SECONDS = 100 * 365 * 86400.0


def _parse_text(text: str) -> float:
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    if value and _PART.sub("", value) == "":
        return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    raise InvalidJob(
        f"not a duration: {text!r} (use a number of seconds or e.g. 30s, 5m, 2h, 7d)"
    )


def format_duration(seconds: float) -> str:
    """A short readable form: 0.25s, 42s, 5m30s, 2h5m, 3d4h."""
    if seconds < 60:
        return f"{seconds:.3g}s"
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m{secs}s" if secs else f"{minutes}m"
