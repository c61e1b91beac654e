"""Putting jobs in the queue: `enqueue`, `enqueue_many` and the six typed helpers.

Every enqueue is the same statement (`sql.INSERT_JOBS`): a batch of one or of
ten thousand costs one round trip. An idempotency key that already exists
gives back the existing job's id, also under concurrent enqueues of that key:
the unique index decides, no unique-violation error escapes.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from json import encoder as json_encoder
from typing import Any, NamedTuple, TypeAlias

import psycopg2
from sqlalchemy import Connection, TextClause
from sqlalchemy import exc as sa_exc

from skiplock.queue_core import payloads, sql, tracing
from skiplock.queue_core.config import cached_settings
from skiplock.queue_core.database import direct, steps
from skiplock.queue_core.database.arrays import number_array, text_array
from skiplock.queue_core.database.borrowed import BorrowedConnection
from skiplock.queue_core.database.db import Joinable, ServerBound, binds_on_server, connect, translate_errors
from skiplock.queue_core.database.faults import sqlstate as sqlstate_of
from skiplock.queue_core.errors import InvalidJob, InvalidPayload, TransactionConflict
from skiplock.queue_core.features import debounce as debouncing
from skiplock.queue_core.features import fairness, limits, rates, sequences, type_policies, unique

MAX_TYPE_LENGTH = 200
MAX_KEY_LENGTH = 1000
# Deeper JSON is a mistake or an attack: decoders recurse (Python's json stops
# near 1000 levels with RecursionError), and every reader of the row pays.
MAX_PAYLOAD_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNFIT = re.compile("[\x01-\x1f\x7f-\x9f\ud800-\udfff]")
_INT32 = 2**31 - 1
_OPTIONS = {"priority", "delay", "max_attempts", "idempotency_key", "user_id",
            "concurrency_key", "concurrency", "unique_for", "depends_on", "on_parent_failure",
            "debounce", "debounce_key", "debounce_mode", "sequence", "on_sequence_failure",
            "fair_key", "rate", "rate_key"}
# What a parent that does not complete does to its dependent (migration 0016).
POLICIES = ("cancel", "run", "hold")
# The batch a `with skiplock.batch(...)` block has open in this context
# (queue_core/features/batches.py): every job enqueued inside it is a member.
OPEN_BATCH: ContextVar[Any] = ContextVar("skiplock_open_batch", default=None)


# One encoder for every payload: json.dumps with options builds a new one per call,
# a third of the cost of preparing a row in a bulk enqueue.
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=True).encode


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The same C encoder `_encode` makes for each call, made once (half the cost of
# `_encode` for a small payload). It keeps no record of the containers it is in
# (markers None): a payload that contains itself ends the encoder's recursion,
# and `_too_deep` then refuses it as too deep, as it always was.
_c_make_encoder: Any = getattr(json_encoder, "c_make_encoder", None)
_c_encode: Any = None if _c_make_encoder is None else _c_make_encoder(
    None, _not_json, json_encoder.encode_basestring_ascii, None, ":", ",", False, False, False)


def _encode_fast(payload: Any) -> str:
    if _c_encode is None:  # a Python without the C accelerator
        return _encode(payload)
    return "".join(_c_encode(payload, 0))


def _new_ids(count: int) -> list[str]:
    """`count` ids as `new_job_id` makes them, with one clock read and one urandom call."""
    prefix = f"{int(time.time() * 1000):012x}"
    digits = os.urandom(10 * count).hex()
    return [prefix + digits[i:i + 20] for i in range(0, 20 * count, 20)]


def new_job_id() -> str:
    """A 32-hex-digit id whose first 12 digits are the time in ms.

    Ids made close in time sort close together, so the primary-key index is
    appended to at its right edge instead of split at random pages.
    """
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


class _Row(NamedTuple):  # a tuple: a million of them are built per backfill
    id: str
    type: str
    payload: str
    priority: int
    delay_s: float
    max_attempts: int
    key: str | None
    user_id: str | None
    concurrency_key: str | None = None
    concurrency: int | None = None
    unique_key: str | None = None  # a scoped key (queue_core/features/unique.py), instead of `key`
    unique_s: float | None = None
    # (job id, or position of an earlier job of the same call; policy) per parent;
    # () for a batch's callback without members (queue_core/features/dependencies.py)
    parents: tuple[tuple[str | int, str], ...] | None = None
    # One pending job per (type, key); `delay_s` is the debounce
    # (queue_core/features/debounce.py); `replace`: this enqueue's payload wins.
    debounce_key: str | None = None
    replace: bool = False
    sequence: str | None = None  # its key's line (queue_core/features/sequences.py)
    sequence_policy: str | None = None  # None: hold
    fair_key: str | None = None  # queue_core/features/fairness.py
    rate: str | None = None  # canonical '<count>/<seconds>s' (queue_core/features/rates.py)
    rate_key: str | None = None


def _text(name: str, value: Any, limit: int, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidJob(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise InvalidJob(f"{name} is {len(value)} characters long; the limit is {limit}")
    if "\x00" in value:
        raise InvalidJob(f"{name} contains a NUL character, which PostgreSQL cannot store")
    if _UNFIT.search(value):
        if _SURROGATE.search(value):
            raise InvalidJob(f"{name} is not valid UTF-8 text")
        raise InvalidJob(f"{name} contains a control character")
    return value


def _too_deep(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (a loop, and no recursion to overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                stack.append((child, depth + 1))
    return False


def _has_invalid_text(value: Any) -> bool:
    """A string (or key) holding a lone surrogate: bytes that were not UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


# Job types already found fit (`_text`): a bulk enqueue checks its one type once.
_FIT_TYPES: dict[str, None] = {}
_FIT_TYPES_MAX = 10_000


def _job_type(job_type: Any) -> str:
    if type(job_type) is str and job_type in _FIT_TYPES:
        return job_type
    checked = _text("job type", job_type, MAX_TYPE_LENGTH, required=True)
    assert checked is not None
    if type(checked) is str and len(_FIT_TYPES) < _FIT_TYPES_MAX:
        _FIT_TYPES[checked] = None
    return checked


def _parents(depends_on: Any, on_parent_failure: Any) -> tuple[tuple[str | int, str], ...] | None:
    """depends_on as (parent, policy) pairs, each parent once: a job id, or the position
    of an earlier job of the same `enqueue_many` call; None when there is none."""
    if depends_on is None:
        if on_parent_failure is not None:
            raise InvalidJob("on_parent_failure goes with depends_on")
        return None
    default = "cancel" if on_parent_failure is None else on_parent_failure
    if isinstance(depends_on, Mapping):
        pairs = list(depends_on.items())
    elif isinstance(depends_on, (str, bytes)) or not isinstance(depends_on, Iterable):
        raise InvalidJob("depends_on must be a list of job ids (or a mapping of job id to "
                         "policy), not a single value")
    else:
        pairs = [(ref, default) for ref in depends_on]
    found: dict[str | int, str] = {}
    for ref, rule in pairs:
        if rule not in POLICIES:
            raise InvalidJob(f"the policy on a parent's failure must be one of "
                             f"{', '.join(POLICIES)}, not {rule!r}")
        if isinstance(ref, bool) or not isinstance(ref, (str, int)):
            raise InvalidJob(f"depends_on names jobs by id (or, in enqueue_many, by the "
                             f"position of an earlier job), not {type(ref).__name__}")
        if isinstance(ref, str):
            _text("parent job id", ref, MAX_KEY_LENGTH, required=True)
        elif ref < 0:
            raise InvalidJob(f"depends_on position {ref} is negative")
        found.setdefault(ref, rule)
    return tuple(found.items()) or None


def _prepare(job_type: Any, payload: Any, *, priority: Any = 0, delay: Any = None,
             max_attempts: Any = None, idempotency_key: Any = None, user_id: Any = None,
             concurrency_key: Any = None, concurrency: Any = None, unique_for: Any = None,
             depends_on: Any = None, on_parent_failure: Any = None,
             debounce: Any = None, debounce_key: Any = None, debounce_mode: Any = None,
             sequence: Any = None, on_sequence_failure: Any = None, fair_key: Any = None,
             rate: Any = None, rate_key: Any = None,
             max_payload_bytes: int, job_id: str | None = None) -> _Row:
    job_type = _job_type(job_type)
    payload = payloads.validate_payload(job_type, payload)  # a model instance: its JSON
    try:
        encoded = _encode_fast(payload)
    except (TypeError, ValueError, RecursionError) as exc:  # a float inf, an int of 4300+
        if _too_deep(payload, MAX_PAYLOAD_DEPTH):  # digits, a loop, or a C-level recursion
            raise InvalidPayload(
                f"payload of {job_type} nests deeper than {MAX_PAYLOAD_DEPTH} levels") from None
        if isinstance(exc, RecursionError):
            raise InvalidPayload(f"payload of {job_type} is nested too deeply") from None
        raise InvalidPayload(f"payload of {job_type} is not JSON: {exc}") from None
    # Every container writes one opening bracket (one inside a string only adds to
    # the count), so a payload with few of them cannot nest deeply: the walk over
    # it runs only when it might.
    if (encoded.count("{") + encoded.count("[") > MAX_PAYLOAD_DEPTH
            and _too_deep(payload, MAX_PAYLOAD_DEPTH)):
        raise InvalidPayload(
            f"payload of {job_type} nests deeper than {MAX_PAYLOAD_DEPTH} levels")
    if "\\u0000" in encoded:
        raise InvalidPayload(
            f"payload of {job_type} contains a NUL character, which PostgreSQL cannot store"
        )
    # jsonb refuses a surrogate that is not part of a pair. ensure_ascii writes a
    # character past U+FFFF as an escaped pair too, so the exact check runs only
    # when one of them is there.
    if "\\ud" in encoded and _has_invalid_text(payload):
        raise InvalidPayload(
            f"payload of {job_type} contains a lone UTF-16 surrogate (text that is not "
            "valid UTF-8), which PostgreSQL cannot store"
        )
    size = len(encoded)  # ensure_ascii: one byte per character
    if size > max_payload_bytes:
        raise InvalidPayload(
            f"payload of {job_type} is {size} bytes; the limit is {max_payload_bytes} "
            "(SKIPLOCK_MAX_PAYLOAD_BYTES)"
        )
    if (type(priority) is not int and (isinstance(priority, bool)
                                       or not isinstance(priority, int))) \
            or abs(priority) > _INT32:
        raise InvalidJob(f"priority must be an integer between -{_INT32} and {_INT32}")
    # A type whose policy an operator set: what the caller does not give, the insert
    # trigger fills from it, as for any producer (queue_core/features/type_policies.py).
    overridden = type_policies.operator_values(job_type)
    if max_attempts is None:
        max_attempts = type_policies.default_max_attempts(job_type)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise InvalidJob("max_attempts must be an integer")
    if not 1 <= max_attempts <= 1000:
        raise InvalidJob(f"max_attempts must be between 1 and 1000, not {max_attempts}")
    if delay is None:
        delay_s = 0.0
    else:
        if isinstance(delay, timedelta):
            delay_s = delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            delay_s = float(delay)
        else:
            raise InvalidJob("delay must be a number of seconds or a timedelta")
        if not 0 <= delay_s <= 10 * 365 * 86400 or delay_s != delay_s:
            raise InvalidJob(f"delay must be between 0 seconds and 10 years, not {delay_s}")
    key = None if idempotency_key is None else _text(
        "idempotency key", idempotency_key, MAX_KEY_LENGTH, required=False)
    user = None if user_id is None else _text("user id", user_id, MAX_KEY_LENGTH,
                                              required=False)
    slot_key, limit = limits.resolve(
        job_type, payload, None if concurrency_key is None else _text(
            "concurrency key", concurrency_key, MAX_KEY_LENGTH, required=False), concurrency,
        overridden)
    if slot_key is not None:
        _text("concurrency key", slot_key, MAX_KEY_LENGTH, required=True)
    parents = _parents(depends_on, on_parent_failure)
    line, line_policy = sequences.resolve(job_type, payload, None if sequence is None else _text(
        "sequence", sequence, MAX_KEY_LENGTH, required=False), on_sequence_failure)
    if line is not None:
        _text("sequence", line, MAX_KEY_LENGTH, required=True)
    fair = fairness.resolve(job_type, payload, None if fair_key is None else _text(
        "fair key", fair_key, MAX_KEY_LENGTH, required=False))
    if fair is not None:
        _text("fair key", fair, MAX_KEY_LENGTH, required=True)
        if slot_key is not None:
            # The slot triggers count the jobs they let in; a second gate on the same
            # change would break their counts (alembic/versions/0021_fairness.py).
            raise InvalidJob(f"a job cannot have both a fair key ({fair!r}) and a concurrency "
                             f"key ({slot_key!r}); a concurrency key already bounds its share")
    window_key, window = rates.resolve(job_type, payload, rate_key, rate)
    if window_key is not None:
        _text("rate key", window_key, MAX_KEY_LENGTH, required=True)
        if fair is not None:
            # Both hold a waiting job out of the claim's index the same way ("heldBack"
            # false); neither gate would know the other's rows.
            raise InvalidJob(f"a job cannot have both a fair key ({fair!r}) and a rate key "
                             f"({window_key!r})")
    if debounce is not None or debounce_key is not None or debounce_mode is not None:
        if line is not None:
            raise InvalidJob("debounce cannot be combined with a sequence: a sequence runs "
                             "every job of its key, a debounce folds them into one")
        if fair is not None:
            raise InvalidJob("debounce cannot be combined with a fair key (not supported: "
                             "a debounced enqueue writes no fair key)")
        if window_key is not None:
            raise InvalidJob("debounce cannot be combined with a rate (not supported: "
                             "a debounced enqueue writes no rate)")
        folded = debouncing.options(
            debounce, _text("debounce key", debounce_key, MAX_KEY_LENGTH, required=False),
            debounce_mode, delay=delay, idempotency_key=idempotency_key,
            unique_for=unique_for, depends_on=depends_on)
        if folded is not None:
            return _Row(job_id or new_job_id(), job_type, encoded, priority, folded.seconds,
                        max_attempts, None, user, slot_key, limit,
                        debounce_key=folded.key, replace=folded.replace)
    if unique_for is None:
        return _Row(job_id or new_job_id(), job_type, encoded, priority, delay_s, max_attempts,
                    key, user, slot_key, limit, parents=parents, sequence=line,
                    sequence_policy=line_policy, fair_key=fair, rate=window,
                    rate_key=window_key)
    scoped, unique_s = unique.window(unique_for)
    if scoped and key is None:
        raise InvalidJob("unique_for needs an idempotency key")
    unique_key, key = (key, None) if scoped else (None, key)
    return _Row(job_id or new_job_id(), job_type, encoded, priority, delay_s, max_attempts,
                key, user, slot_key, limit, unique_key, unique_s, parents, sequence=line,
                sequence_policy=line_policy, fair_key=fair, rate=window, rate_key=window_key)


def check_job(job: Mapping[str, Any]) -> None:
    """Validate one job as `enqueue_many` would, without writing it (InvalidJob if wrong)."""
    _prepare_job(job, 0, cached_settings().max_payload_bytes)


def _prepare_job(job: Any, index: int, limit: int, job_id: str | None = None) -> _Row:
    # The common job, {"type": ..., "payload": ...}, needs no sorting of options.
    if type(job) is dict and len(job) == 2 and "type" in job and "payload" in job:
        return _prepare(job["type"], job["payload"], max_payload_bytes=limit, job_id=job_id)
    if not isinstance(job, Mapping):
        raise InvalidJob(f"job #{index} is not a mapping")
    unknown = set(job) - _OPTIONS - {"type", "payload"}
    if unknown:
        raise InvalidJob(f"job #{index} has unknown options: {', '.join(sorted(unknown))}")
    options = {k: v for k, v in job.items() if k in _OPTIONS and v is not None}
    return _prepare(job.get("type"), job.get("payload"), **options, max_payload_bytes=limit,
                    job_id=job_id)


def enqueue(job_type: str, payload: Any, *, priority: int = 0,
            delay: float | timedelta | None = None, max_attempts: int | None = None,
            idempotency_key: str | None = None, user_id: str | None = None,
            concurrency_key: str | None = None, concurrency: int | None = None,
            unique_for: str | float | timedelta | None = None,
            depends_on: Iterable[str] | Mapping[str, str] | None = None,
            on_parent_failure: str | None = None,
            debounce: str | float | timedelta | None = None, debounce_key: str | None = None,
            debounce_mode: str | None = None, sequence: str | None = None,
            on_sequence_failure: str | None = None,
            fair_key: str | None = None,
            rate: str | None = None, rate_key: str | None = None,
            conn: Joinable | None = None) -> str:
    """Add one job; return its id (the existing job's id if the key already exists).

    With `conn` the insert joins the caller's transaction: the job exists only
    if that transaction commits. `concurrency_key` / `concurrency`: at most
    that many jobs of the key run at once (queue_core/features/limits.py). `unique_for`:
    how long the idempotency key holds ("active", "1h"; queue_core/features/unique.py).
    `depends_on`: the ids of jobs that must end first, and `on_parent_failure`
    what a parent that does not complete does to it: "cancel" (the default),
    "run" or "hold" (queue_core/features/dependencies.py). `debounce` with
    `debounce_key`: one pending job per type and key, which a later enqueue moves
    to now + `debounce` (and, with `debounce_mode="replace"`, gives its payload);
    the pending job's id is returned (queue_core/features/debounce.py).
    `sequence`: a key whose jobs run one at a time in enqueue order, and
    `on_sequence_failure` what this job does to the rest once dead-lettered: "hold"
    them (the default) or "pass" (queue_core/features/sequences.py).
    `fair_key`: under contention, the keys' jobs take turns, by weight
    (queue_core/features/fairness.py).
    `rate` / `rate_key`: at most that many starts of the key per window ("10/m",
    "4/2s"; the type without a key), on every host (queue_core/features/rates.py).
    `payload`: a JSON object, or an instance of a dataclass or pydantic model
    (stored as its JSON); checked against the type's payload model where this
    process knows it (queue_core/payloads.py).
    """
    type_policies.refresh_overrides()
    row = job_row(job_type, payload, priority=priority, delay=delay, max_attempts=max_attempts,
                  idempotency_key=idempotency_key, user_id=user_id,
                  concurrency_key=concurrency_key, concurrency=concurrency, unique_for=unique_for,
                  depends_on=depends_on, on_parent_failure=on_parent_failure,
                  debounce=debounce, debounce_key=debounce_key, debounce_mode=debounce_mode,
                  sequence=sequence, on_sequence_failure=on_sequence_failure,
                  fair_key=fair_key,
                  rate=rate, rate_key=rate_key)
    return _write([row], conn, tracing.current_context()).ids[0]


def job_row(job_type: Any, payload: Any, *, priority: Any, delay: Any, max_attempts: Any,
            idempotency_key: Any, user_id: Any, concurrency_key: Any, concurrency: Any,
            unique_for: Any, depends_on: Any = None, on_parent_failure: Any = None,
            debounce: Any = None, debounce_key: Any = None, debounce_mode: Any = None,
            sequence: Any = None, on_sequence_failure: Any = None,
            fair_key: Any = None,
            rate: Any = None, rate_key: Any = None) -> _Row:
    """One job of `enqueue` (and `skiplock.aenqueue`), checked and encoded: the row
    `insert_steps` writes; InvalidJob or InvalidPayload if it is wrong."""
    # Straight to _prepare: the options are named arguments, nothing to sort out.
    row = _prepare(job_type, payload, priority=0 if priority is None else priority,
                   delay=delay, max_attempts=max_attempts, idempotency_key=idempotency_key,
                   user_id=user_id, concurrency_key=concurrency_key, concurrency=concurrency,
                   unique_for=unique_for, depends_on=depends_on,
                   on_parent_failure=on_parent_failure, debounce=debounce,
                   debounce_key=debounce_key, debounce_mode=debounce_mode,
                   sequence=sequence, on_sequence_failure=on_sequence_failure,
                   fair_key=fair_key,
                   rate=rate, rate_key=rate_key,
                   max_payload_bytes=cached_settings().max_payload_bytes)
    if row.parents and any(isinstance(ref, int) for ref, _ in row.parents):
        raise InvalidJob("depends_on names jobs by id; a position refers to an earlier job "
                         "of the same enqueue_many call")
    return row


def enqueue_many(jobs: Iterable[Mapping[str, Any]],
                 conn: Joinable | None = None) -> list[str]:
    """Add a batch in one round trip; the ids come back in input order."""
    return enqueue_batch(jobs, conn=conn).ids


@dataclass(frozen=True)
class Enqueued:
    ids: list[str]  # in input order; the existing job's id where a key already existed
    created: int  # rows this call wrote (the others' keys already existed)


def enqueue_batch(jobs: Iterable[Mapping[str, Any]],
                  conn: Joinable | None = None) -> Enqueued:
    """`enqueue_many`, also saying how many jobs were new (backfills report it)."""
    type_policies.refresh_overrides()
    rows = job_rows(jobs)
    if not rows:
        return Enqueued([], 0)
    return _write(rows, conn, tracing.current_context())


def job_rows(jobs: Iterable[Mapping[str, Any]]) -> list[_Row]:
    """The jobs of `enqueue_many` (and `skiplock.aenqueue_many`), checked and encoded."""
    limit = cached_settings().max_payload_bytes
    jobs = list(jobs)
    ids = _new_ids(len(jobs))
    rows = [_prepare_job(job, index, limit, ids[index]) for index, job in enumerate(jobs)]
    for index, row in enumerate(rows):
        for ref, _ in row.parents or ():
            # Only jobs that exist and earlier jobs of this call: no cycle can be written.
            if isinstance(ref, int) and ref >= index:
                raise InvalidJob(
                    f"job #{index} depends on itself" if ref == index else
                    f"job #{index} depends on job #{ref}, which comes after it: a job can "
                    "depend only on jobs that exist and on earlier jobs of the same call")
    return rows


def is_graph(rows: Sequence[_Row]) -> bool:
    """Whether `rows` are written with their edges, in a transaction of their own
    (queue_core/features/dependencies.py): a job has parents, or a batch is open."""
    return OPEN_BATCH.get() is not None or any(r.parents is not None for r in rows)


def _write(rows: Sequence[_Row], conn: Joinable | None, trace: str | None) -> Enqueued:
    """Insert `rows`; `trace` is the context they were enqueued in (queue_core/tracing.py),
    the same for all of them. On skiplock's own connection, a key archived while the
    insert waited (`KeyArchived`) is tried once more: the second insert leaves it out
    and reads its job from history. In a caller's transaction the error aborted the
    transaction: it goes to the caller, as a unique violation would."""
    try:
        return _write_once(rows, conn, trace)
    except KeyArchived:
        if conn is not None:
            raise
        return _write_once(rows, conn, trace)


def _write_once(rows: Sequence[_Row], conn: Joinable | None, trace: str | None) -> Enqueued:
    if is_graph(rows):
        from skiplock.queue_core.features import dependencies

        if any(r.debounce_key is not None for r in rows):
            raise InvalidJob("a debounced job cannot be a batch's member: the batch would "
                             "count one job that later enqueues move or fold away")
        return dependencies.write(rows, conn, OPEN_BATCH.get(), trace)
    if conn is None:
        try:
            kept = direct.acquire()
            if kept is not None:
                try:
                    return _insert(kept, rows, trace)
                finally:
                    direct.release(kept)
        except (sa_exc.DBAPIError, psycopg2.Error):
            # As `connect()` would have said it; translated only when it happens,
            # since entering translate_errors costs each enqueue a few microseconds.
            with translate_errors():
                raise
    # Another thread has the kept connection, or the caller's transaction.
    with connect(conn, autocommit=True) as c:
        if isinstance(c, Connection) and binds_on_server(c):
            return _insert(ServerBound(c), rows, trace)
        return _insert(c, rows, trace)


_INSERT_UNKEYED = direct.Prepared(sql.INSERT_UNKEYED_JOB_POSITIONAL,
                                  len(sql.INSERT_UNKEYED_JOB_PARAMS), before=sql.WAKE)
# The same for one debounced job, in each mode (queue_core/features/debounce.py).
_INSERT_DEBOUNCED = {
    replace: direct.Prepared(sql.INSERT_DEBOUNCED_JOB_POSITIONAL.format(payload=payload),
                             len(sql.INSERT_UNKEYED_JOB_PARAMS) + 1, before=sql.WAKE)
    for replace, payload in ((False, ""), (True, "payload = EXCLUDED.payload,"))}

# What `insert_steps` yields: a statement and its parameters, to be run in order.
Statement: TypeAlias = tuple[TextClause, dict[str, Any]]


def _insert(conn: Connection | ServerBound | BorrowedConnection | direct.KeptConnection,
            rows: Sequence[_Row], trace: str | None) -> Enqueued:
    if (len(rows) == 1 and isinstance(conn, direct.KeptConnection)
            and rows[0].debounce_key is not None and OPEN_BATCH.get() is None):
        return _insert_debounced(conn, rows[0], trace)
    if (len(rows) == 1 and isinstance(conn, direct.KeptConnection)
            and rows[0].key is None and rows[0].unique_key is None
            and rows[0].debounce_key is None and rows[0].sequence is None
            and rows[0].fair_key is None and rows[0].rate is None):
        return _insert_prepared(conn, rows[0], trace)
    return steps.run(insert_steps(rows, trace), lambda step: conn.execute(*step))


def insert_steps(rows: Sequence[_Row],
                 trace: str | None) -> Generator[Statement, Any, Enqueued]:
    """The statements that write `rows`, enqueued in the trace context `trace`
    (queue_core/tracing.py), each sent back its result, and what they wrote.

    The blocking path (`_insert`) and the async one (queue_core/aio.py) run these
    same steps (queue_core/database/steps.py)."""
    if any(r.debounce_key is not None for r in rows):
        return (yield from _debounced_steps(rows, trace))
    if any(r.sequence is not None for r in rows):
        # The sequence's columns are the graph statement's (no parents: none waits).
        ids, inserted = yield from keyed_steps(rows, trace, sql.INSERT_GRAPH_JOBS, _in_line(rows))
        return Enqueued(ids, len(inserted))
    # A fair key and a rate go with the keyed statements: the unkeyed ones, the hot
    # path of every other job, stay as they are.
    if all(r.key is None and r.unique_key is None and r.fair_key is None and r.rate is None
           for r in rows):
        if len(rows) == 1:
            # One job without a key: it is new, whatever else is in the table.
            yield from _inserting(sql.INSERT_UNKEYED_JOB, _unkeyed_params(rows[0], trace), rows)
        else:
            yield from _inserting(sql.INSERT_UNKEYED_JOBS, _unkeyed_columns(rows, trace), rows)
        return Enqueued([r.id for r in rows], len(rows))
    ids, inserted = yield from keyed_steps(rows, trace)
    return Enqueued(ids, len(inserted))


def _debounced_steps(rows: Sequence[_Row],
                     trace: str | None) -> Generator[Statement, Any, Enqueued]:
    """`insert_steps` for a call with debounced rows: the others first, as usual, then
    the debounced ones, a statement per round of distinct keys
    (queue_core/features/debounce.py)."""
    ids: list[str | None] = [None] * len(rows)
    created = 0
    plain = [i for i, r in enumerate(rows) if r.debounce_key is None]
    if plain:
        done = yield from insert_steps([rows[i] for i in plain], trace)
        for i, job_id in zip(plain, done.ids, strict=True):
            ids[i] = job_id
        created += done.created
    folded = [i for i, r in enumerate(rows) if r.debounce_key is not None]
    keys = [(rows[i].type, rows[i].debounce_key or "", rows[i].replace) for i in folded]
    for round_ in debouncing.rounds(keys):
        for replace, positions in round_.items():
            batch = [rows[folded[p]] for p in positions]
            statement = sql.INSERT_DEBOUNCED_REPLACE if replace else sql.INSERT_DEBOUNCED
            result = yield from _inserting(
                statement, {**_unkeyed_columns(batch, trace),
                            "debounce_keys": text_array([r.debounce_key for r in batch])}, batch)
            found = {(r.type, r.key): r for r in result}
            for p in positions:
                row = found[(rows[folded[p]].type, rows[folded[p]].debounce_key)]
                ids[folded[p]] = row.id
                created += bool(row.created)
    return Enqueued([i for i in ids if i is not None], created)


def keyed_steps(rows: Sequence[_Row], trace: str | None, statement: TextClause | None = None,
                extra: Callable[[list[int]], dict[str, str]] | None = None,
                ) -> Generator[Statement, Any, tuple[list[str], set[str]]]:
    """The steps that insert `rows` that may have keys; they return (each row's id or
    its key's existing job's, in order; the ids inserted). `statement` with `extra`'s
    columns for the rows at the given positions replaces INSERT_JOBS (the jobs of a
    graph: queue_core/features/dependencies.py)."""
    created: set[str] = set()
    ids: dict[int, str] = {}
    todo = list(range(len(rows)))
    scoped = sorted({r.unique_key for r in rows if r.unique_key is not None})
    if scoped:  # free the scoped keys whose window is over (queue_core/features/unique.py)
        yield sql.FREE_UNIQUE_KEYS, {"keys": text_array(scoped)}
    # A key's row can vanish between our conflict and our look-up (cleanup, a
    # rolled-back concurrent insert): insert what is still missing again.
    for _ in range(5):
        batch = [rows[i] for i in todo]
        if statement is not None and extra is not None:
            result = yield from _inserting(
                statement, {**_columns(batch, trace), **extra(todo)}, batch)
        elif len(batch) == 1:
            result = yield from _inserting(
                sql.INSERT_JOB, {**batch[0]._asdict(), "trace_context": trace}, batch)
        else:
            result = yield from _inserting(sql.INSERT_JOBS, _columns(batch, trace), batch)
        inserted = {r.id for r in result}
        created |= inserted
        for i in todo:
            if rows[i].id in inserted:
                ids[i] = rows[i].id
        todo = [i for i in todo if i not in ids]
        if not todo:
            break
        skipped = todo
        keys = sorted({key for i in skipped if (key := rows[i].key) is not None})
        found = yield sql.EXISTING_BY_KEY, {"keys": text_array(keys)}
        existing = {r.key: r.id for r in found}
        # A type whose policy has a unique window keeps an idempotency key as its
        # scoped key (the insert trigger of migration 0017_policies moves it there).
        unique_keys = sorted({u for i in skipped if (u := rows[i].unique_key) is not None}
                             | {k for i in skipped
                                if (k := rows[i].key) is not None and k not in existing})
        existing_unique: dict[str | None, str] = {}
        if unique_keys:
            found = yield sql.EXISTING_BY_UNIQUE_KEY, {"keys": text_array(unique_keys)}
            existing_unique = {r.key: r.id for r in found}
        for i in skipped:
            if rows[i].key in existing:
                ids[i] = existing[rows[i].key]
            elif rows[i].unique_key in existing_unique:
                ids[i] = existing_unique[rows[i].unique_key]
            elif rows[i].unique_key is None and rows[i].key in existing_unique:
                ids[i] = existing_unique[rows[i].key]
        todo = [i for i in skipped if i not in ids]
        if not todo:
            break
    if todo:
        raise InvalidJob("could not enqueue: idempotency keys kept conflicting with vanishing rows")
    return [ids[i] for i in range(len(rows))], created


def _in_line(rows: Sequence[_Row]) -> Callable[[list[int]], dict[str, str]]:
    """INSERT_GRAPH_JOBS's own columns for `rows` in sequences and without parents."""
    def extra(positions: list[int]) -> dict[str, str]:
        return {"waiting_for": "{}", "has_dependents": "{}",
                **sequences.columns([rows[i].sequence for i in positions],
                                    [rows[i].sequence_policy for i in positions])}
    return extra


def _inserting(statement: TextClause, params: dict[str, Any],
               rows: Sequence[_Row]) -> Generator[Statement, Any, Any]:
    """One insert; its errors in the queue's words."""
    try:
        return (yield statement, params)
    except (sa_exc.IntegrityError, sa_exc.OperationalError) as exc:
        _refuse(exc, rows)
        raise


def _unkeyed_values(row: _Row, trace: str | None) -> tuple[Any, ...]:
    """INSERT_UNKEYED_JOB's parameters, in the order of INSERT_UNKEYED_JOB_PARAMS."""
    return (row.id, row.type, row.payload, row.priority, row.delay_s, row.max_attempts,
            row.user_id, row.concurrency_key, row.concurrency, trace)


def _unkeyed_params(row: _Row, trace: str | None) -> dict[str, Any]:
    return dict(zip(sql.INSERT_UNKEYED_JOB_PARAMS, _unkeyed_values(row, trace), strict=True))


def _insert_prepared(conn: direct.KeptConnection, row: _Row, trace: str | None) -> Enqueued:
    """One job without a key on skiplock's kept connection: INSERT_UNKEYED_JOB as the
    statement prepared there (the hot path of `enqueue`)."""
    try:
        conn.execute_prepared(_INSERT_UNKEYED, _unkeyed_values(row, trace))
    except (sa_exc.IntegrityError, sa_exc.OperationalError) as exc:
        _refuse(exc, [row])
        raise
    return Enqueued([row.id], 1)


def _insert_debounced(conn: direct.KeptConnection, row: _Row, trace: str | None) -> Enqueued:
    """One debounced job on skiplock's kept connection: its key's pending job's id."""
    try:
        [found] = conn.execute_prepared(_INSERT_DEBOUNCED[row.replace],
                                        (*_unkeyed_values(row, trace), row.debounce_key))
    except (sa_exc.IntegrityError, sa_exc.OperationalError) as exc:
        _refuse(exc, [row])
        raise
    return Enqueued([found.id], int(bool(found.created)))


def _refuse(exc: sa_exc.IntegrityError | sa_exc.OperationalError, rows: Sequence[_Row]) -> None:
    """Raise an insert's error in the queue's words when it has some (a row the table
    refuses, a conflict of the caller's transaction); else return, and the caller
    re-raises it as it is."""
    if isinstance(exc, sa_exc.IntegrityError):
        raise _integrity_error(exc) from None
    conflict = _conflict(exc, rows)
    if conflict is not None:
        raise conflict from exc


def _columns(rows: Sequence[_Row], trace: str | None) -> dict[str, str | None]:
    """INSERT_JOBS's columns: those of INSERT_UNKEYED_JOBS and the keys."""
    return {**_unkeyed_columns(rows, trace),
            "keys": text_array([r.key for r in rows]),
            "unique_keys": text_array([r.unique_key for r in rows]),
            "unique_secs": number_array([r.unique_s for r in rows]),
            "fair_keys": text_array([r.fair_key for r in rows]),
            "rates": text_array([r.rate for r in rows]),
            "rate_keys": text_array([r.rate_key for r in rows])}


def _unkeyed_columns(rows: Sequence[_Row], trace: str | None) -> dict[str, str | None]:
    """Each column as one array literal (queue_core/database/arrays.py), in few passes: ids
    are hex digits (no quotes needed), a type is escaped once per batch, a column of
    NULLs is '{}' (unnest pads the shorter arrays with NULLs); the trace context, one
    value for all."""
    types: dict[str, str] = {}
    for r in rows:
        if r.type not in types:
            types[r.type] = '"' + r.type.replace("\\", "\\\\").replace('"', '\\"') + '"'
    users = [r.user_id for r in rows]
    slots = [r.concurrency_key for r in rows]
    return {
        "ids": "{" + ",".join([r.id for r in rows]) + "}",
        "types": "{" + ",".join([types[r.type] for r in rows]) + "}",
        "payloads": text_array([r.payload for r in rows]),
        "priorities": number_array([r.priority for r in rows]),
        "delays": number_array([r.delay_s for r in rows]),
        "max_attempts": number_array([r.max_attempts for r in rows]),
        "user_ids": text_array(users) if any(u is not None for u in users) else "{}",
        "slot_keys": text_array(slots) if any(k is not None for k in slots) else "{}",
        "slot_limits": number_array([r.concurrency for r in rows]) if any(slots) else "{}",
        "trace_context": trace,
    }


def _conflict(exc: sa_exc.OperationalError, rows: Sequence[_Row]) -> TransactionConflict | None:
    """A serialization failure or deadlock of the caller's transaction, in words.

    In a REPEATABLE READ or SERIALIZABLE transaction, ON CONFLICT cannot skip a
    row its snapshot does not see: a concurrent enqueue of the same key that
    committed after the snapshot makes the insert fail with 40001. The server is
    fine; the caller's transaction must be retried, and then finds the job."""
    sqlstate = sqlstate_of(exc.orig)
    if sqlstate not in ("40001", "40P01"):
        return None
    keys = sorted({r.key for r in rows if r.key is not None})
    what = f"key {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}" if keys else "these jobs"
    return TransactionConflict(
        f"cannot enqueue {what}: a concurrent transaction enqueued the same key after this "
        f"transaction's snapshot was taken (REPEATABLE READ or SERIALIZABLE); roll back and "
        f"retry the transaction", sqlstate=sqlstate)


class KeyArchived(InvalidJob):
    """An idempotency key whose job a mover archived while this insert waited for it
    (migration 0022_history): the key's job exists, in history."""


def _integrity_error(exc: sa_exc.IntegrityError) -> InvalidJob:
    orig = exc.orig
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None) or ""
    detail = getattr(getattr(orig, "diag", None), "message_detail", None) or str(orig)
    if "userId" in constraint:
        return InvalidJob(f"cannot enqueue: the user does not exist ({detail})")
    if constraint == "WorkerJob_idempotencyKey_key":
        # ON CONFLICT takes the live part's conflicts: only the history's trigger says so.
        return KeyArchived(f"cannot enqueue: {str(orig).strip().splitlines()[0]}")
    return InvalidJob(f"cannot enqueue: {str(orig).strip().splitlines()[0]}")


# -- the six typed helpers, with the original service's default idempotency keys


def _typed(job_type: str, payload: Mapping[str, Any], default_key: str | None,
           options: dict[str, Any]) -> str:
    if options.get("idempotency_key") is None:
        options["idempotency_key"] = default_key
    if options.get("user_id") is None and isinstance(payload.get("userId"), str):
        options["user_id"] = payload["userId"]
    return enqueue(job_type, payload, **options)


# Each helper takes the JSON object or the type's model instance (handlers/payloads.py).

def enqueue_interpret_event(payload: Any, **options: Any) -> str:
    """INTERPRET_EVENT {eventId}; key `interpret:{eventId}`."""
    data = payloads.validate_payload(payloads.INTERPRET_EVENT, payload)
    return _typed(payloads.INTERPRET_EVENT, data, f"interpret:{data['eventId']}", options)


def enqueue_detect_patterns(payload: Any, **options: Any) -> str:
    """DETECT_PATTERNS {userId, triggerEventId, interpretationId}; key `patterns:{triggerEventId}`."""
    data = payloads.validate_payload(payloads.DETECT_PATTERNS, payload)
    return _typed(payloads.DETECT_PATTERNS, data, f"patterns:{data['triggerEventId']}", options)


def insights_key(payload: Mapping[str, Any]) -> str | None:
    """`insights:{eventId}:{triggerType}`; without an event, one per pattern and trigger.

    The original service keyed event-less insights on `Date.now()`, which is no key at all
    (every retry of the caller enqueued again). A pattern-triggered run is keyed
    on the pattern; with neither event nor pattern there is nothing stable to
    key on, and the job is enqueued without a key.
    """
    if payload.get("eventId"):
        return f"insights:{payload['eventId']}:{payload['triggerType']}"
    if payload.get("patternId"):
        return f"insights:{payload['userId']}:{payload['triggerType']}:{payload['patternId']}"
    return None


def enqueue_generate_insights(payload: Any, **options: Any) -> str:
    """GENERATE_INSIGHTS {userId, triggerType, eventId?, interpretationId?, patternId?}."""
    data = payloads.validate_payload(payloads.GENERATE_INSIGHTS, payload)
    return _typed(payloads.GENERATE_INSIGHTS, data, insights_key(data), options)


def enqueue_generate_review(payload: Any, **options: Any) -> str:
    """GENERATE_REVIEW {userId, type, periodKey, timezone}; key `review:{userId}:{type}:{periodKey}`."""
    data = payloads.validate_payload(payloads.GENERATE_REVIEW, payload)
    key = f"review:{data['userId']}:{data['type']}:{data['periodKey']}"
    return _typed(payloads.GENERATE_REVIEW, data, key, options)


def enqueue_generate_tomorrow_plan(payload: Any, **options: Any) -> str:
    """GENERATE_TOMORROW_PLAN {userId, reviewId, targetDate}; key `tomorrow:{userId}:{targetDate}`."""
    data = payloads.validate_payload(payloads.GENERATE_TOMORROW_PLAN, payload)
    key = f"tomorrow:{data['userId']}:{data['targetDate']}"
    return _typed(payloads.GENERATE_TOMORROW_PLAN, data, key, options)


def enqueue_suggest_uom_update(payload: Any, **options: Any) -> str:
    """SUGGEST_UOM_UPDATE {userId, dailyPlanId}; key `uom:{dailyPlanId}`."""
    data = payloads.validate_payload(payloads.SUGGEST_UOM_UPDATE, payload)
    return _typed(payloads.SUGGEST_UOM_UPDATE, data, f"uom:{data['dailyPlanId']}", options)
