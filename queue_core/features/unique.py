"""Unique windows: how long an idempotency key keeps a second job of that key out.

    enqueue(TYPE, payload, idempotency_key=K)                      # as long as the job exists
    enqueue(TYPE, payload, idempotency_key=K, unique_for="active")  # while PENDING or PROCESSING
    enqueue(TYPE, payload, idempotency_key=K, unique_for="1h")      # for an hour from the enqueue

The default is the Prisma schema's: the key is "idempotencyKey", unique for as long as
the row exists (until `skiplock cleanup` deletes it). A scoped key is kept in
"uniqueKey" instead, with "uniqueUntil" for a period; a partial unique index
decides between concurrent enqueues exactly as for "idempotencyKey" (no
check-then-insert). A key whose window is over is freed by the next enqueue of
the same key, in a statement of its own just before the insert: the finished
(or expired) row keeps everything but the key. The two kinds do not see each
other: enqueue a given key always with the same scope.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from skiplock.queue_core.durations import parse_duration
from skiplock.queue_core.errors import InvalidJob

ACTIVE = "active"
MAX_WINDOW_S = 366 * 86400.0


def window(unique_for: Any) -> tuple[bool, float | None]:
    """(scoped, seconds): (False, None) for the default, (True, None) while active,
    (True, s) for a period of s seconds."""
    if unique_for is None or unique_for == "exists":
        return False, None
    if unique_for == ACTIVE:
        return True, None
    if isinstance(unique_for, (str, int, float, timedelta)) and not isinstance(unique_for, bool):
        try:
            seconds = parse_duration(unique_for)
        except InvalidJob:
            seconds = 0.0
        if 0 < seconds <= MAX_WINDOW_S:
            return True, seconds
    raise InvalidJob(f"unique_for must be 'active', 'exists', or a period up to 366 days such "
                     f"as '1h', not {unique_for!r}")
