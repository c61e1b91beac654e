"""How the pages write times, durations, sizes and JSON: Jinja filters of the same
names (app.py), and used directly where a sentence is composed in Python
(job_page.py), so that both read alike."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from skiplock.queue_core.durations import format_duration

# Ids as enqueue makes them: 12 hex digits of the time in ms, then 20 random ones.
_GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def ts(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "-"
    delta = ((now or datetime.now(UTC)) - value).total_seconds()
    return (format_duration(delta) + " ago") if delta >= 0 else ("in " + format_duration(-delta))


def seconds(value: float | None) -> str:
    return format_duration(value) if value is not None else "-"


def between(start: datetime | None, end: datetime | None) -> str | None:
    """The time from `start` to `end`, or None when either is unknown or they are
    out of order (a retried job's `startedAt` is its previous attempt's)."""
    if start is None or end is None or end < start:
        return None
    return format_duration((end - start).total_seconds())


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def short_id(job_id: str) -> str:
    """A generated id by its last 8 digits: its first 12 are the time, the same for
    every job of a batch, so only the random end tells a list's rows apart (the
    full id is the link and its title). Any other id is shown whole; the listing
    cuts it with an ellipsis if it is long."""
    return "…" + job_id[-8:] if _GENERATED_ID.fullmatch(job_id) else job_id


FILTERS = {"ts": ts, "ago": ago, "seconds": seconds, "size": size, "pretty": pretty,
           "short_id": short_id}
