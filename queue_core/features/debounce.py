"""Debounce: one pending job per type and key, moved (or replaced) by every later enqueue.

    enqueue(TYPE, payload, debounce="30s", debounce_key=K)                          # delay
    enqueue(TYPE, payload, debounce="30s", debounce_key=K, debounce_mode="replace")

While a job of TYPE with key K is PENDING (enqueued, not claimed yet), an
enqueue of the same type and key does not add a job: it moves the pending one
to now + `debounce` and returns its id. In `delay` mode the pending job keeps
its payload (the first enqueue's); in `replace` mode it takes this enqueue's
(the latest wins). Either way the job runs once the key has been quiet for
`debounce`. Once the job was claimed, the next enqueue of K makes a new
pending job: a change that arrives while it runs is not lost.

The partial unique index "WorkerJob_debounce_key" (migration 0020_debounce)
decides, in one `INSERT ... ON CONFLICT ... DO UPDATE` (queue_core/sql.py
INSERT_DEBOUNCED): concurrent enqueues of a key leave exactly one pending job,
whose run time is the last enqueue's, and an enqueue that meets a claim in
flight either moves the row before the claim takes it (the claim's SKIP LOCKED
passes over it, and it is no longer due) or waits for the claim's commit and
inserts a new job. A claimed job keeps its key, but one that comes back to
PENDING (retried, released, rescued) has it cleared by a trigger: it is an
ordinary job then, and never collides with the new pending one.

A row that another producer (psql, the seed's Prisma client) inserts with
"debounceKey" set is a plain insert: if a pending job of that type and key
exists, the unique index refuses it (unique_violation, 23505, on
"WorkerJob_debounce_key"); with `ON CONFLICT (type, "debounceKey") WHERE
status = 'PENDING' AND "debounceKey" IS NOT NULL DO UPDATE SET "availableAt" =
EXCLUDED."availableAt"` it debounces exactly as `enqueue` does.

A debounce key does not go with an idempotency key, `unique_for`, `delay` (the
debounce is the delay) or `depends_on`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.durations import parse_duration
from skiplock.queue_core.errors import InvalidJob

MODES = ("delay", "replace")
MAX_DEBOUNCE_S = 10 * 365 * 86400.0


class Debounce(NamedTuple):
    key: str
    seconds: float
    replace: bool


def options(debounce: Any, key: str | None, mode: Any, *, delay: Any, idempotency_key: Any,
            unique_for: Any, depends_on: Any) -> Debounce | None:
    """The debounce of one enqueue (`key` already checked as text), or None without one;
    InvalidJob for a combination that cannot mean anything."""
    if debounce is None and key is None:
        if mode is not None:
            raise InvalidJob("debounce_mode goes with debounce and debounce_key")
        return None
    if debounce is None or key is None:
        raise InvalidJob("debounce and debounce_key go together: the key names the pending "
                         "job that later enqueues move")
    if mode is None:
        mode = "delay"
    if mode not in MODES:
        raise InvalidJob(f"debounce_mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(debounce, (str, int, float, timedelta)) or isinstance(debounce, bool):
        raise InvalidJob(f"debounce must be a duration such as '30s' or a number of seconds, "
                         f"not {debounce!r}")
    seconds = parse_duration(debounce)
    if seconds > MAX_DEBOUNCE_S:
        raise InvalidJob(f"debounce must be at most 10 years, not {debounce!r}")
    for name, value in (("delay", delay), ("idempotency_key", idempotency_key),
                        ("unique_for", unique_for), ("depends_on", depends_on)):
        if value is not None:
            raise InvalidJob(f"debounce does not go with {name}"
                             + (": the debounce is the delay" if name == "delay" else ""))
    return Debounce(key, seconds, mode == "replace")


def rounds(keys: Sequence[tuple[str, str, bool]]) -> list[dict[bool, list[int]]]:
    """The positions of a call's debounced rows, given (type, key, replace) for each, as
    statements to run in order: each round holds a key at most once (a statement's
    ON CONFLICT DO UPDATE may not touch a row twice), split by mode, each in key
    order. A key's n-th enqueue of the call goes in round n, so the call's order
    per key is kept."""
    seen: dict[tuple[str, str], int] = {}
    out: list[dict[bool, list[int]]] = []
    for position, (job_type, key, replace) in enumerate(keys):
        n = seen.get((job_type, key), 0)
        seen[(job_type, key)] = n + 1
        if n == len(out):
            out.append({})
        out[n].setdefault(replace, []).append(position)
    # In key order: two calls that debounce the same keys lock their rows in one
    # order, and never deadlock on each other.
    for round_ in out:
        for positions in round_.values():
            positions.sort(key=lambda p: keys[p][:2])
    return out


# Why a job waits (`skiplock stats`' "why is this job waiting"): debounced, and not
# due yet. `reason` says it in words, from the row's columns.
WAITING = """status = 'PENDING' AND "debounceKey" IS NOT NULL AND "availableAt" > now()"""


def reason(available_at: Any, key: str, moves: int | None) -> str:
    """The sentence for a job that WAITING matches."""
    moved = f"; moved by {moves} later enqueue{'s' if moves != 1 else ''}" if moves else ""
    return (f"not due until {available_at}: debounced by key {key} (each enqueue of the key "
            f"moves it to that enqueue plus its debounce{moved})")


class Debounced(NamedTuple):
    pending: int  # pending jobs that have a debounce key
    not_due: int  # of those, not due yet: still being debounced
    moves: int  # enqueues folded into them so far


def debounced_by_type(conn: Connection | Session | None = None) -> dict[str, Debounced]:
    """The pending debounced jobs, by type (`skiplock stats`, the metrics)."""
    with connect(conn) as c:
        return {row.type: Debounced(int(row.pending), int(row.not_due), int(row.moves))
                for row in c.execute(sql.DEBOUNCED_BY_TYPE)}
