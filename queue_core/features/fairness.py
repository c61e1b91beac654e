"""Weighted fairness between keys: under contention, workers shared by weight.

    skiplock.enqueue("RENDER", payload, fair_key="user:42")

    @skiplock.handler("RENDER", fair_key="userId")   # key "RENDER:<payload.userId>"

    skiplock.set_weight("user:42", 3)                 # or: skiplock weight user:42 3

Each fair key keeps at most its *window* (weight x base, the base 10 unless
the database setting `skiplock.fair_window` says otherwise) of its PENDING
jobs in the claim's index; the rest wait their turn outside it. When some of
the key's jobs are claimed, the end of that statement lets as many of its next
jobs in, at the back of the queue (dated now), in one UPDATE; so keys take
turns, each as many jobs per round as its window: over a busy period a key of
weight 3 starts three jobs for each one of a key of weight 1, and a light
key's new job waits for at most the windows of the keys ahead of it, not their
backlogs. While no other key has jobs waiting, a key's window grows to GROWTH
times its own (there is nobody to be fair to, and claims take full bites); when
one does, the grown key lets nothing in until it is back within its window.
The claim of jobs without a fair key is not changed. Why this design, and what
it costs: alembic/versions/0021_fairness.py, docs/jobs.md "Fairness".

Where the key comes from, first match wins: `enqueue(..., fair_key=K)`; the
type's registered `@handler(type, fair_key=FIELD)` (keyed
`TYPE:payload[FIELD]`, or a function of the payload). A key's weight is its
row in "WorkerFairKey", 1 without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import Joinable, connect
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features.limits import KeyFrom

MAX_WEIGHT = 1000
DEFAULT_WINDOW = 10  # the base when `skiplock.fair_window` is not set (the migration's)
GROWTH = 20  # a key's window grows this many times while no other key waits (the migration's)

_keys: dict[str, KeyFrom] = {}


def set_type_key(job_type: str, key_from: KeyFrom) -> None:
    """The fair key of `job_type`'s jobs: a payload field, a function of the payload,
    or None (no fairness by default)."""
    if key_from is None:
        _keys.pop(job_type, None)
        return
    if not (callable(key_from) or (isinstance(key_from, str) and key_from.strip())):
        raise InvalidJob(f"fair_key of {job_type} must be a payload field or a function")
    _keys[job_type] = key_from


def resolve(job_type: str, payload: Mapping[str, Any], key: str | None) -> str | None:
    """The fair key a new job gets, or None."""
    if key is not None:
        return key
    key_from = _keys.get(job_type)
    if key_from is None:
        return None
    value = key_from(payload) if callable(key_from) else payload.get(key_from)
    if value is None:  # a payload without the field is not held for fairness
        return None
    return str(value) if callable(key_from) else f"{job_type}:{value}"


def check_weight(weight: Any) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise InvalidJob(f"weight must be an integer between 1 and {MAX_WEIGHT}, not {weight!r}")
    return weight


def set_weight(key: str, weight: int | None, conn: Joinable | None = None) -> int:
    """Give fair key `key` the weight `weight` (None: back to 1); returns how many of its
    jobs a larger window let in at once. Its window is weight x the base."""
    if not isinstance(key, str) or not key.strip() or len(key) > 1000 or "\x00" in key:
        raise InvalidJob("a fair key must be a non-empty string of at most 1000 characters")
    with connect(conn, autocommit=True) as c:
        if weight is None:
            c.execute(sql.FORGET_WEIGHT, {"key": key})
        else:
            c.execute(sql.SET_WEIGHT, {"key": key, "weight": check_weight(weight)})
        return _let_in(c, c.execute(sql.FILL_TURNS, {"key": key}))


def fill_turns(conn: Joinable | None = None) -> int:
    """Let in the jobs of every key whose window has room (a safety net: the triggers do
    it as jobs leave; the pool's recovery and `skiplock cleanup` call this). Returns
    how many jobs it let in."""
    with connect(conn, autocommit=True) as c:
        return _let_in(c, c.execute(sql.FILL_TURNS, {"key": None}))


def _let_in(c: Any, result: Any) -> int:
    """How many jobs a fill let in; idle workers are woken when some were."""
    n = int(next(iter(result)).let_in)
    if n:
        c.execute(sql.WAKE_ALONE)
    return n


@dataclass(frozen=True)
class FairKey:
    key: str
    weight: int
    window: int  # how many of its jobs may be in the claim's index at once
    admitted: int  # how many are (PENDING, in the index)
    waiting: int  # how many wait their turn


def fair_keys(limit: int = 50, conn: Joinable | None = None,
              key: str | None = None) -> list[FairKey]:
    """The fair keys that have pending jobs or a weight (only `key`, if given), the most
    waiting first."""
    with connect(conn, autocommit=True) as c:
        return [FairKey(r.key, r.weight, r.window, r.admitted, r.waiting)
                for r in c.execute(sql.FAIR_KEYS, {"limit": limit, "key": key})]
