"""Sequences: the jobs of one key run one at a time, strictly in the order they were enqueued.

    skiplock.enqueue("SYNC_LEDGER", payload, sequence="account:7")

    @skiplock.handler("SYNC_LEDGER", sequence_key="accountId", on_sequence_failure="hold")

A job of a sequence waits, PENDING with "heldBack" false, outside the claim's
index, until every job of its key enqueued before it has ended; then the
statement that ends its predecessor lets it in, in the same transaction
(migration 0019_sequences; no process, no poll). Everything is done by the
table's triggers, so a row that psql, Prisma or another language writes with
"sequenceKey" is sequenced as `enqueue` does it.

Order is the order of enqueue: the insert numbers the job from its key's row
in "WorkerSequence", which stays locked until its transaction ends, so of two
transactions that enqueue into one key, the second waits for the first's
commit and comes after it. Enqueue sequenced jobs in short transactions. The
key's *head*, the one job that may run, is its job in line with the lowest
number (in line: not ended, or dead-lettered under hold); nothing records it,
so that the end of a head writes nothing but the job it lets in.

A job that fails and is retried with a back-off stays its key's head: the
rest wait for it, across crashes and pools. Once it ends badly, its own row's
policy ("sequencePolicy", NULL = hold) decides:
- `hold` (the default): dead-lettered, it holds the rest of its key until a
  person retries it (it runs first again; the rest follow once it completes),
  deletes it, or lets the key go on without it (`release_sequence(key)`,
  `skiplock sequence release KEY`);
- `pass`: dead-lettered, it lets the next one run.
A cancelled or deleted job never holds its key: cancelling is a person's
decision about that job, not about the ones after it. A job that had passed
its key on and is retried later joins the back of its key's line.

Where the key and the policy come from, first match wins: `enqueue(...,
sequence=K, on_sequence_failure=P)`; the job type's registration
(`@handler(type, sequence_key=FIELD, on_sequence_failure=P)`), keyed
`TYPE:payload[FIELD]`, or a function of the payload whose value is the key
as it is (two types may then share a line). A key's jobs of several types
share one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import Joinable, connect
from skiplock.queue_core.errors import InvalidJob

POLICIES = ("hold", "pass")

KeyFrom = str | Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class TypeSequence:
    key_from: KeyFrom | None  # a payload field or a function of the payload
    policy: str | None


_types: dict[str, TypeSequence] = {}


def check_policy(value: Any) -> str:
    if value not in POLICIES:
        raise InvalidJob(f"on_sequence_failure must be one of {', '.join(POLICIES)}, "
                         f"not {value!r}")
    return str(value)


def check_type_sequence(job_type: str, key_from: Any, policy: Any) -> None:
    """InvalidJob if `set_type_sequence` would refuse these."""
    if not (key_from is None or callable(key_from)
            or (isinstance(key_from, str) and key_from.strip())):
        raise InvalidJob(f"sequence_key of {job_type} must be a payload field or a function")
    if policy is not None:
        check_policy(policy)


def set_type_sequence(job_type: str, key_from: KeyFrom | None, policy: str | None = None) -> None:
    """The sequence of `job_type`'s jobs (None for both forgets it)."""
    check_type_sequence(job_type, key_from, policy)
    if key_from is None and policy is None:
        _types.pop(job_type, None)
        return
    _types[job_type] = TypeSequence(key_from, policy)


def resolve(job_type: str, payload: Mapping[str, Any], key: str | None,
            policy: Any) -> tuple[str | None, str | None]:
    """The (key, policy) a new job gets; (None, None) when it is in no sequence. The
    policy is None for the default (hold), which the row leaves NULL."""
    registered = _types.get(job_type)
    if policy is not None:
        check_policy(policy)
    elif registered is not None:
        policy = registered.policy
    if key is None and registered is not None and registered.key_from is not None:
        key = _default_key(job_type, payload, registered.key_from)
    if key is None:
        if policy is not None and registered is None:
            raise InvalidJob("on_sequence_failure goes with a sequence")
        return None, None
    return key, None if policy == "hold" else policy


def _default_key(job_type: str, payload: Mapping[str, Any], key_from: KeyFrom) -> str | None:
    if callable(key_from):
        value = key_from(payload)
        return None if value is None else str(value)
    value = payload.get(key_from)
    # A payload without the field is in no sequence, rather than in one shared line
    # that would serialise every such job of the type.
    return None if value is None else f"{job_type}:{value}"


def columns(keys: list[str | None], policies: list[str | None]) -> dict[str, str]:
    """The sequence columns of a batch, as array literals."""
    from skiplock.queue_core.database.arrays import text_array

    if not any(k is not None for k in keys):
        return {"sequence_keys": "{}", "sequence_policies": "{}"}
    return {"sequence_keys": text_array(keys), "sequence_policies": text_array(policies)}


@dataclass(frozen=True)
class SequenceInfo:
    """A key with jobs in line: the one that may run (its head), and how many wait."""

    key: str
    head: str | None
    head_status: str | None  # DEAD_LETTER: the key is held
    waiting: int


def held_sequences(limit: int = 20, conn: Joinable | None = None) -> list[SequenceInfo]:
    """Keys held by a dead-lettered job (policy hold), the most waiting first."""
    with connect(conn) as c:
        return [SequenceInfo(r.key, r.head, r.head_status, int(r.waiting))
                for r in c.execute(sql.HELD_SEQUENCES, {"limit": limit})]


def prune_idle_sequences(idle_s: float = 3600.0) -> int:
    """Forget keys with no job in line for `idle_s` seconds (cleanup calls it); returns
    how many."""
    with connect(autocommit=True) as c:
        return int(c.execute(sql.PRUNE_IDLE_SEQUENCES, {"idle_s": float(idle_s)}).rowcount)


def release_sequence(key: str, conn: Joinable | None = None) -> str | None:
    """Let a held key go on without its dead-lettered head, which stays dead-lettered
    and takes the policy pass (retried later, it joins the back of the line); returns
    the id of the job that is now its head (None: nothing was waiting). InvalidJob if
    the key is not held by a dead letter."""
    with connect(conn) as c:
        row = c.execute(sql.RELEASE_SEQUENCE, {"key": key}).first()
    if row is None:
        raise InvalidJob(f"sequence {key!r} is not held by a dead letter: nothing to release")
    return row.head
