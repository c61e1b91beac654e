"""Per-type policies in the database: "WorkerTypePolicy" (migration 0017_policies).

A type's defaults, its concurrency limit and key field, max_attempts, backoff,
unique window and rate, are stored in one row per type, and the insert
trigger of "WorkerJob" applies them to every row that leaves them unset,
whoever wrote it (`skiplock.enqueue`, the seed's Prisma client, psql, another
language). Explicit values on the row win.

Where a row comes from (`source`):
- 'boot': a pool's master writes its handlers' `@handler(...)` options when it
  starts and on HUP (`write_boot`), one statement for all its types; a type it
  serves without options loses its boot row. The latest boot wins.
- 'operator': `skiplock policy set TYPE ...` (`set_type_policy`). A boot never
  changes such a row: the operator's values hold until `skiplock policy reset
  TYPE` deletes it, and the next boot (or HUP) writes the registered values
  again.

What cannot be stored: a function as `concurrency_key` or `backoff`. Such a
type's key (and limit) applies only where `skiplock.enqueue` runs in a process
that registered it, and its backoff only in the workers.

In a process that registered the type, `skiplock.enqueue` applies the
registration itself (the same values a boot writes), unless an operator set
the type's policy: then it leaves to the trigger what the caller did not give,
and the operator's values apply to its rows as to every other producer's.
max_attempts it resolves itself, explicit > an operator's > registered > a
boot's > 3, since the trigger takes its 3 for a 3 that was given (from Prisma
or psql, 3 is the column's default and gives way to the policy). It reads
this table again at most every `OVERRIDES_TTL_S` seconds (and at once after a
`set_type_policy` or `reset_type_policy` in the same process).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from skiplock.queue_core import sql
from skiplock.queue_core.database.arrays import text_array
from skiplock.queue_core.database.db import Joinable, connect
from skiplock.queue_core.errors import InvalidJob, SkiplockError
from skiplock.queue_core.features import limits, policy, rates, unique

# The stored columns, in the order `skiplock policy show` prints them.
FIELDS = ("concurrencyLimit", "concurrencyKeyField", "maxAttempts", "backoff", "uniqueFor",
          "rate", "rateKeyField")


OVERRIDES_TTL_S = 10.0
# The table, as this process last read it: type -> (source, values).
_stored: dict[str, tuple[str, dict[str, Any]]] = {}
_stored_until = 0.0


@dataclass(frozen=True)
class TypePolicy:
    type: str
    values: dict[str, Any]  # FIELDS that are set
    source: str
    updated_at: datetime | None
    updated_by: str | None


def _backoff(value: Any, job_type: str) -> float | list[float] | None:
    if value is None or callable(value):
        return None  # a function cannot be stored: the workers apply it
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return policy.check_delay(value, f"backoff of {job_type}")
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        return [policy.check_delay(v, f"each backoff delay of {job_type}") for v in value]
    raise InvalidJob(f"backoff of {job_type} must be seconds or a list of seconds")


def _unique_for(value: Any) -> str | None:
    scoped, seconds = unique.window(value)
    if not scoped:
        return None
    return unique.ACTIVE if seconds is None else f"{seconds:g}"


def registered_values(job_type: str, registration: Any = None) -> dict[str, Any]:
    """The storable defaults this process registered for `job_type` (FIELDS that are set)."""
    values: dict[str, Any] = {}
    limit = limits.type_limit(job_type)
    if limit is not None and not callable(limit.key_from):
        values["concurrencyLimit"] = limit.limit
        values["concurrencyKeyField"] = limit.key_from
    registered = policy.registered_max_attempts(job_type)
    if registered is not None:
        values["maxAttempts"] = registered
    stored = _backoff(policy.policy(job_type).backoff, job_type)
    if stored is not None:
        values["backoff"] = stored
    # @handler(rate=, rate_key=): a rate keyed by a function stays out of the database
    # (Python enqueues still apply it).
    rate = getattr(registration, "rate", None)
    rate_key = getattr(registration, "rate_key", None)
    if rate is not None and (rate_key is None or isinstance(rate_key, str)):
        try:
            values["rate"] = rates.canonical(rate)
        except InvalidJob:
            pass
        else:
            values["rateKeyField"] = rate_key
    return {k: v for k, v in values.items() if v is not None}


def boot_rows(types: Iterable[str]) -> list[dict[str, Any]]:
    """What a pool serving `types` writes at boot: one row per type with any default."""
    from skiplock.handlers import registry

    rows = []
    for job_type in sorted(set(types)):
        values = registered_values(job_type, registry.get_registration(job_type))
        if values:
            rows.append({"type": job_type, **values})
    return rows


def write_boot(served: Iterable[str], rows: list[dict[str, Any]], by: str,
               conn: Joinable | None = None) -> None:
    """Write a booting pool's rows (`boot_rows`) for the types it serves."""
    with connect(conn, autocommit=True) as c:
        c.execute(sql.WRITE_BOOT_POLICIES, {"rows": json.dumps(rows),
                                            "served": text_array(sorted(set(served))),
                                            "by": by})
    forget_overrides()


def type_policies(job_type: str | None = None,
                  conn: Joinable | None = None) -> list[TypePolicy]:
    with connect(conn) as c:
        found = list(c.execute(sql.TYPE_POLICIES, {"type": job_type}))
    return [TypePolicy(r.type, {f: getattr(r, f) for f in FIELDS if getattr(r, f) is not None},
                       r.source, r.updated_at, r.updated_by) for r in found]


def apply_operator_backoff(conn: Joinable | None = None) -> list[str]:
    """Make the operator's backoffs this process's (a worker, as it boots); returns
    the types. Boot rows hold what this process registered already."""
    changed = []
    for p in type_policies(conn=conn):
        if p.source == "operator" and "backoff" in p.values:
            policy.override_backoff(p.type, p.values["backoff"])
            changed.append(p.type)
    return changed


def due() -> bool:
    """Whether this process's copy of the table is to be read again (and, if so, it
    is marked read: one caller reads it)."""
    global _stored_until
    now = time.monotonic()
    if now < _stored_until:
        return False
    _stored_until = now + OVERRIDES_TTL_S
    return True


def store(rows: Iterable[Any]) -> None:
    """This process's copy of the table, from ALL_POLICIES' rows."""
    global _stored
    _stored = {r.type: (r.source, {f: getattr(r, f) for f in FIELDS
                                   if getattr(r, f) is not None}) for r in rows}


def refresh_overrides() -> None:
    """Read the table again if this process's copy is older than OVERRIDES_TTL_S (one
    query on a connection of its own; a failure keeps the copy until the next try)."""
    if not due():
        return
    try:
        with connect(autocommit=True) as c:
            store(c.execute(sql.ALL_POLICIES).fetchall())
    except (SkiplockError, SQLAlchemyError):  # down, or a schema before 0017_policies
        return


def operator_values(job_type: str) -> dict[str, Any] | None:
    """The operator's values for `job_type` as last read, None if it has none."""
    stored = _stored.get(job_type)
    return stored[1] if stored is not None and stored[0] == "operator" else None


def default_max_attempts(job_type: str) -> int:
    """A job's max_attempts when its enqueue gives none: an operator's, else the one
    registered here, else a boot's, else 3."""
    source, values = _stored.get(job_type, ("", {}))
    if source == "operator" and "maxAttempts" in values:
        return int(values["maxAttempts"])
    registered = policy.registered_max_attempts(job_type)
    if registered is not None:
        return registered
    return int(values.get("maxAttempts", policy.DEFAULT_MAX_ATTEMPTS))


def forget_overrides() -> None:
    """Read the table again at the next enqueue."""
    global _stored_until
    _stored_until = 0.0


def check_values(job_type: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """An operator's values, checked and in stored form; None clears a field."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise InvalidJob(f"unknown policy fields: {', '.join(sorted(unknown))}")
    if not isinstance(job_type, str) or not job_type.strip() or len(job_type) > 200:
        raise InvalidJob("job type must be a non-empty string of at most 200 characters")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            out[name] = None
        elif name == "concurrencyLimit":
            out[name] = limits.check_limit(value, f"concurrency of {job_type}")
        elif name == "maxAttempts":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                raise InvalidJob(f"max_attempts of {job_type} must be between 1 and 1000")
            out[name] = value
        elif name == "backoff":
            out[name] = _backoff(value, job_type)
        elif name == "uniqueFor":
            out[name] = _unique_for(value)
        elif name == "rate":
            out[name] = rates.canonical(value)
        else:  # a payload field
            if not isinstance(value, str) or not value.strip():
                raise InvalidJob(f"{name} of {job_type} must be a payload field name")
            out[name] = value
    return out


def set_type_policy(job_type: str, values: Mapping[str, Any], by: str) -> TypePolicy:
    """Set an operator's values for `job_type` (the others stay); returns the row.
    InvalidJob (and nothing written) when a value, or the row it makes, is wrong."""
    checked = check_values(job_type, values)
    current = next(iter(type_policies(job_type)), None)
    merged = {**(current.values if current else {}), **checked}
    if merged.get("concurrencyKeyField") is not None and merged.get("concurrencyLimit") is None:
        raise InvalidJob(f"a concurrency key field of {job_type} needs a concurrency limit")
    if merged.get("rateKeyField") is not None and merged.get("rate") is None:
        raise InvalidJob(f"a rate key field of {job_type} needs a rate")
    with connect(autocommit=True) as c:
        c.execute(sql.SET_TYPE_POLICY, {"type": job_type, "values": json.dumps(checked),
                                        "by": by})
    forget_overrides()
    return type_policies(job_type)[0]


def reset_type_policy(job_type: str) -> str | None:
    """Delete `job_type`'s row; returns the source it had (None: there was none)."""
    with connect(autocommit=True) as c:
        source = c.execute(sql.RESET_TYPE_POLICY, {"type": job_type}).scalar_one_or_none()
    forget_overrides()
    return None if source is None else str(source)


def describe(values: Mapping[str, Any]) -> list[str]:
    """A policy's values in words, one per field."""
    lines = []
    if "concurrencyLimit" in values:
        field = values.get("concurrencyKeyField")
        per = f"per payload {field!r} (key TYPE:<{field}>)" if field else "for the whole type"
        lines.append(f"concurrency: {values['concurrencyLimit']} at once {per}")
    if "maxAttempts" in values:
        lines.append(f"max attempts: {values['maxAttempts']}")
    if "backoff" in values:
        backoff = values["backoff"]
        shown = ", ".join(f"{float(b):g}" for b in backoff) if isinstance(backoff, list) \
            else f"{float(backoff):g}"
        lines.append(f"backoff: {shown} s")
    if "uniqueFor" in values:
        window = values["uniqueFor"]
        lines.append("unique: while pending or running" if window == unique.ACTIVE
                     else f"unique: for {float(window):g} s after the enqueue")
    if "rate" in values:
        field = values.get("rateKeyField")
        per = f"per payload {field!r}" if field else "for the whole type"
        lines.append(f"rate: {values['rate']} {per}")
    return lines
