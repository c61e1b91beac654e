"""Batches: `with skiplock.batch(on_complete=("TYPE", payload)) as b:` groups the jobs
enqueued inside it, and one callback job runs once the last of them ended.

The block is one transaction (the caller's with `conn=`, else one the batch
opens and commits at the end of the block): its members, the callback and the
batch's row are written together or not at all, and none of them runs before
the block ends. A block that raises writes nothing of its own (with `conn=`,
its members stay in the caller's transaction, without a callback).

The callback is a job that depends on every member with the policy "run"
(queue_core/features/dependencies.py): it becomes ready exactly once, in the
transaction that ends the last member, whichever worker ends it. Then the
members' ends are counted, and the callback becomes `on_failure` if some
member did not complete and the batch has one, else `on_complete`; its
payload gets a "batch" object: {id, total, completed, deadLettered,
cancelled, deleted}. With only `on_failure` and every member completed,
nothing runs (the callback ends COMPLETED at once). A callback's payload is a
JSON object or a payload model's instance (queue_core/payload_models.py),
stored as its JSON; a typed handler reads the "batch" object through a field
of that name (a model ignores the fields it does not declare).

A batch's members are written on the block's blocking connection: inside the
block, `skiplock.aenqueue` is refused rather than written outside the batch.

`key=` makes the fan-out safe to run again: the batch, and its callback
(idempotency key `batch:KEY`), are the first run's; members with their own
idempotency keys are found, not written again. Members new in a later run are
written, but the batch keeps the members it had.

`get_batch(id)` counts a batch's members now (`progress`: the fraction that
ended), `skiplock.wait(batch_id)` waits for its callback to end.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from skiplock.queue_core import sql, tracing
from skiplock.queue_core.config import cached_settings
from skiplock.queue_core.database.db import (
    Joinable,
    connect,
    get_engine,
    translate_errors,
)
from skiplock.queue_core.enqueue import OPEN_BATCH, Statement, _prepare, new_job_id
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import dependencies
from skiplock.queue_core.payload_models import is_model_instance

PREFIX = "batch-"
Callback = tuple[str, Any]  # (job type, JSON object or payload model instance)


@dataclass
class Batch:
    """An open batch: its id, and the members enqueued so far."""

    id: str
    key: str | None
    conn: Any  # the transaction's connection
    given: Any = None  # the caller's conn, as it was given
    members: dict[str, None] = field(default_factory=dict)  # in order, each once
    fresh: set[str] = field(default_factory=set)  # written by this batch's transaction
    callback_id: str | None = None

    def joined(self, ids: list[str], created: set[str]) -> None:
        for job_id in ids:
            self.members[job_id] = None
        self.fresh |= created


def _callback(name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not (isinstance(value, tuple) and len(value) == 2
            and (isinstance(value[1], Mapping) or is_model_instance(value[1]))):
        raise InvalidJob(f"{name} must be a (job type, payload) pair")
    job_type, payload = value
    # Checked now, as an enqueue would, so that a wrong callback fails the block early;
    # a model instance (queue_core/payload_models.py) is kept as the JSON it stores.
    row = _prepare(job_type, payload if is_model_instance(payload) else dict(payload),
                   max_payload_bytes=cached_settings().max_payload_bytes)
    return {"type": row.type, "payload": json.loads(row.payload)}


@contextmanager
def batch(on_complete: Callback | None = None, on_failure: Callback | None = None, *,
          key: str | None = None, priority: int = 0,
          conn: Joinable | None = None) -> Iterator[Batch]:
    """Group the jobs enqueued inside the block; see the module's docstring."""
    complete = _callback("on_complete", on_complete)
    failure = _callback("on_failure", on_failure)
    if complete is None and failure is None:
        raise InvalidJob("a batch needs on_complete, on_failure or both")
    if OPEN_BATCH.get() is not None:
        raise InvalidJob("batches do not nest: close the open batch first")
    with _transaction(conn) as c:
        found = c.execute(sql.BATCH_BY_KEY, {"key": key}).first() if key is not None else None
        opened = Batch(found.id if found else PREFIX + new_job_id(), key, c, conn)
        token = OPEN_BATCH.set(opened)
        try:
            yield opened
        finally:
            OPEN_BATCH.reset(token)
        with translate_errors():
            _close(opened, complete, failure, priority)


@contextmanager
def _transaction(conn: Joinable | None) -> Iterator[Any]:
    """The caller's transaction, or one of the batch's own, committed if the block ends
    normally."""
    if conn is not None:
        with connect(conn) as c:
            yield c
        return
    with translate_errors():
        own = get_engine().connect()
    try:
        with translate_errors():
            transaction = own.begin()
        yield own
        with translate_errors():
            transaction.commit()
    finally:
        own.close()


def _close(b: Batch, complete: dict[str, Any] | None, failure: dict[str, Any] | None,
           priority: int) -> None:
    first = complete or failure
    assert first is not None
    members = list(b.members)
    row = _prepare(first["type"], first["payload"], priority=priority,
                   idempotency_key=None if b.key is None else f"batch:{b.key}",
                   depends_on={m: "run" for m in members} or None,
                   max_payload_bytes=cached_settings().max_payload_bytes)
    if not members:
        row = row._replace(parents=())  # a dependent of nothing: ready at once, but counted

    def write_batch(created: set[str]) -> Generator[Statement, Any, None]:
        if row.id in created:
            yield sql.INSERT_BATCH, {
                "id": b.id, "key": b.key, "callback_id": row.id,
                "on_complete": None if complete is None else json.dumps(complete),
                "on_failure": None if failure is None else json.dumps(failure),
                "total": len(members)}

    target = dependencies.on_server(b.conn)
    with translate_errors():
        done, created = dependencies.run(target, dependencies.graph_steps(
            [row], tracing.current_context(), fresh=b.fresh, after_insert=write_batch))
    b.callback_id = done.ids[0]
    if row.id in created and not members:
        target.execute(sql.BATCH_READY, {"callback_id": row.id})
    if row.id not in created and b.key is not None:
        # A run before this one (or a concurrent one) made the batch: it is that one.
        found = target.execute(sql.BATCH_BY_KEY, {"key": b.key}).first()
        if found is not None:
            b.id, b.callback_id = found.id, found.callback_id


# -- reading a batch ---------------------------------------------------------------------


@dataclass(frozen=True)
class BatchInfo:
    id: str
    callback_id: str
    callback_type: str | None
    callback_status: str | None  # None: the callback was deleted (cleanup)
    total: int
    completed: int
    dead_lettered: int
    cancelled: int
    pending: int
    processing: int
    created_at: datetime
    ended_at: datetime | None  # when the last member ended
    counts: dict[str, Any] | None  # what the callback got

    @property
    def ended(self) -> int:
        return self.completed + self.dead_lettered + self.cancelled

    @property
    def progress(self) -> float:
        """The fraction of members that ended (1.0 for a batch without members)."""
        if self.ended_at is not None or self.total == 0:
            return 1.0
        return self.ended / self.total

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "callbackId": self.callback_id,
                "callbackType": self.callback_type, "callbackStatus": self.callback_status,
                "total": self.total, "completed": self.completed,
                "deadLettered": self.dead_lettered, "cancelled": self.cancelled,
                "pending": self.pending, "processing": self.processing,
                "progress": self.progress,
                "createdAt": self.created_at.isoformat(),
                "endedAt": None if self.ended_at is None else self.ended_at.isoformat()}


def get_batch(batch_id: str, conn: Joinable | None = None) -> BatchInfo | None:
    with connect(conn) as c:
        r = c.execute(sql.BATCH_STATUS, {"id": batch_id}).first()
    if r is None:
        return None
    return BatchInfo(r.id, r.callback_id, r.callback_type, r.callback_status, r.total,
                     r.completed, r.dead_lettered, r.cancelled, r.pending, r.processing,
                     r.created_at, r.ended_at, r.counts)


def batch_members(batch_id: str, conn: Joinable | None = None,
                  limit: int = 1000) -> list[Any]:
    """The batch's members (id, type, status, attempts, completed_at, last_error), by id."""
    with connect(conn) as c:
        return list(c.execute(sql.BATCH_MEMBERS, {"id": batch_id, "limit": limit}))


def batch_of(job_id: str, conn: Joinable | None = None) -> str | None:
    """The batch `job_id` is a member or the callback of."""
    with connect(conn) as c:
        r = c.execute(sql.BATCH_OF_JOB, {"id": job_id}).first()
    return None if r is None else r.id

