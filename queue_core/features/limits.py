"""Concurrency limits per key: never more than N jobs of one key running, on every host.

    skiplock.enqueue("RENDER", payload, concurrency_key="user:42", concurrency=2)

    @skiplock.handler("DETECT_PATTERNS", concurrency=1, concurrency_key="userId")

A job with a key holds one of its key's slots from the moment it is let into
the queue (PENDING, in the claim's index) until it ends (COMPLETED, FAILED,
DEAD_LETTER, or deleted). The key's other jobs wait *held back* ("heldBack"),
outside the claim's partial index: the claim never sees them, so it costs
what it costs without limits, and a user's 100,000-job backfill puts only
`limit` rows in front of everyone else: the next user's job is claimed next.
When a job of the key ends, the statement that ends it (through a trigger:
migration 0013_slot_counts) frees its slot and lets the key's best held-back
job in, in the same transaction. The trigger compares each changed row's old
and new state (its key, whether it holds a slot), so a slot cannot leak
whichever path moves the job (completion, failure, recovery, cancel, cleanup,
a script that changes the key or "heldBack", a TRUNCATE); what bypasses the
triggers altogether, `recount_slots()` repairs (cleanup runs it).

A job that is not due (delayed, or waiting for its retry or after a snooze)
keeps or takes a slot only while no job of its key that is due before it
waits for one: a ready job of the key takes the slot of a pending holder
that is not due yet, at once. Done in the trigger, not the claim: the claim
still only reads its index, and a delayed job that holds a free slot is in
that index when it comes due, with no timer to let it in.

Where the key and the limit come from, first match wins:
1. `enqueue(..., concurrency_key=K, concurrency=N)`;
2. `concurrency_key=K` alone: the job type's limit (an operator's, else the
   registered one);
3. nothing: the policy an operator set for the type (`skiplock policy set`),
   applied by the insert trigger; else the job type's registered default
   (`@handler(type, concurrency=N, concurrency_key=FIELD)`), keyed
   `TYPE:payload[FIELD]` (or `TYPE` alone without a field: N at once of the
   whole type); else, for a row that carries no key, whatever the type's
   policy in "WorkerTypePolicy" says (queue_core/features/type_policies.py:
   what rows from Prisma, psql or another language get too). A function as
   `concurrency_key` cannot be stored there: it applies only where Python
   enqueues in a process that registered it.
A key names its slots across types: jobs of two types enqueued with the same
key share its limit (the latest enqueue's limit is the key's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.errors import InvalidJob

MAX_LIMIT = 10_000

KeyFrom = str | Callable[[Mapping[str, Any]], str | None] | None


@dataclass(frozen=True)
class TypeLimit:
    limit: int
    key_from: KeyFrom  # a payload field, a function of the payload, or None (the type)


_limits: dict[str, TypeLimit] = {}


def check_limit(limit: Any, what: str) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidJob(f"{what} must be an integer between 1 and {MAX_LIMIT}, not {limit!r}")
    return limit


def set_type_limit(job_type: str, limit: int | None, key_from: KeyFrom = None) -> None:
    """At most `limit` jobs of `job_type` per key at once (None removes the limit)."""
    if limit is None:
        if key_from is not None:
            raise InvalidJob(f"concurrency_key of {job_type} needs a concurrency limit")
        _limits.pop(job_type, None)
        return
    check_limit(limit, f"concurrency of {job_type}")
    if not (key_from is None or callable(key_from)
            or (isinstance(key_from, str) and key_from.strip())):
        raise InvalidJob(f"concurrency_key of {job_type} must be a payload field or a function")
    _limits[job_type] = TypeLimit(limit, key_from)


def type_limit(job_type: str) -> TypeLimit | None:
    return _limits.get(job_type)


def resolve(job_type: str, payload: Mapping[str, Any], key: Any, limit: Any,
            overridden: Mapping[str, Any] | None = None) -> tuple[str | None, int | None]:
    """The (key, limit) a new job gets; (None, None) when it has no limit, or when the
    insert trigger gives it the policy an operator set (`overridden`: its values)."""
    registered = _limits.get(job_type)
    if overridden is not None and (registered is None or not callable(registered.key_from)):
        if key is None:
            if limit is not None:
                raise InvalidJob("concurrency= needs a concurrency_key")
            return None, None
        if limit is None and overridden.get("concurrencyLimit") is not None:
            return key, int(overridden["concurrencyLimit"])
    if key is None:
        if limit is not None:
            raise InvalidJob("concurrency= needs a concurrency_key")
        if registered is None:
            return None, None
        key = default_key(job_type, payload, registered.key_from)
        if key is None:
            return None, None
        return key, registered.limit
    if limit is None:
        if registered is None:
            raise InvalidJob(f"concurrency_key {key!r} needs a limit: pass concurrency=N, or "
                             f"register {job_type} with @handler(..., concurrency=N)")
        limit = registered.limit
    return key, check_limit(limit, "concurrency")


def default_key(job_type: str, payload: Mapping[str, Any], key_from: KeyFrom) -> str | None:
    if key_from is None:
        return job_type
    if callable(key_from):
        value = key_from(payload)
        return None if value is None else str(value)
    value = payload.get(key_from)
    # A payload without the field is not limited: better than one shared key
    # that would serialise every such job of the type.
    return None if value is None else f"{job_type}:{value}"


def recount_slots() -> int:
    """Recount the slots of every key whose count is off and let its jobs in; returns how
    many counts were wrong (cleanup calls it). The triggers keep counts right on their
    own; this repairs what bypassed them (triggers disabled, a hand-edited
    "WorkerConcurrencyKey")."""
    with connect(autocommit=True) as c:
        return int(c.execute(sql.RECOUNT_SLOTS).scalar_one())


def prune_idle_keys(idle_s: float = 3600.0) -> int:
    """Forget keys that no job has held or waited for in `idle_s` seconds (cleanup calls
    it); returns how many."""
    with connect(autocommit=True) as c:
        return int(c.execute(sql.PRUNE_IDLE_KEYS, {"idle_s": float(idle_s)}).rowcount)
