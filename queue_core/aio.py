"""The queue from asyncio: `await skiplock.aenqueue(...)`, `aenqueue_many`,
`await_result`, `acancel`, `acancel_many`.

Each is its blocking namesake on an async connection (queue_core/database/
async_connections.py says which): the same checks of the job, with the same
messages, before anything is sent; the same statements, parameters and reading
of their answers (the steps of `enqueue.insert_steps`, `cancel.cancel_steps`,
`waiting.waiting`, and `dependencies.graph_steps` for jobs with parents, run by
`steps.arun`); so the same idempotency, unique windows, dependencies, errors and
timeouts. With `conn=` the statements join the caller's open
transaction (psycopg 3's AsyncConnection, SQLAlchemy's AsyncConnection or
AsyncSession): a job exists only if the caller commits. Without it, each call
opens a connection of its own and closes it when done: an application that
enqueues often passes the connection its request already holds.

`await_result` waits as `wait` does: it marks the job, LISTENs on a connection
of its own for the job's end, re-reads the job at least every `poll_max`
seconds, and polls only (from `poll_min` up) when LISTEN is off or lost. Its
reads run on a second connection of its own, each within the time left. No
thread is involved: the pauses are the event loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import exc as sa_exc

from skiplock.queue_core import sql, tracing
from skiplock.queue_core.config import cached_settings
from skiplock.queue_core.database import steps
from skiplock.queue_core.database.async_connections import (
    AsyncBorrowed,
    AsyncJoinable,
    ajoin,
    close,
    open_own,
)
from skiplock.queue_core.database.db import translate_errors
from skiplock.queue_core.enqueue import (
    OPEN_BATCH,
    Enqueued,
    KeyArchived,
    insert_steps,
    is_graph,
    job_row,
    job_rows,
)
from skiplock.queue_core.errors import InvalidJob, SkiplockError
from skiplock.queue_core.features import dependencies, type_policies, waiting
from skiplock.queue_core.features.cancel import CancelResult, cancel_steps, who_cancels
from skiplock.queue_core.jobs import Job


async def aenqueue(job_type: str, payload: Mapping[str, Any], *, priority: int = 0,
                   delay: float | timedelta | None = None, max_attempts: int | None = None,
                   idempotency_key: str | None = None, user_id: str | None = None,
                   concurrency_key: str | None = None, concurrency: int | None = None,
                   unique_for: str | float | timedelta | None = None,
                   depends_on: Iterable[str] | Mapping[str, str] | None = None,
                   on_parent_failure: str | None = None,
                   debounce: str | float | timedelta | None = None,
                   debounce_key: str | None = None, debounce_mode: str | None = None,
                   sequence: str | None = None, on_sequence_failure: str | None = None,
                   fair_key: str | None = None,
                   rate: str | None = None, rate_key: str | None = None,
                   conn: AsyncJoinable | None = None) -> str:
    """`enqueue`, awaited: add one job, return its id (the existing job's id when the
    idempotency key already exists). With `conn` (an async connection) the insert
    joins the caller's open transaction. `depends_on` and `on_parent_failure` as
    `enqueue`'s (queue_core/features/dependencies.py); `debounce`, `debounce_key` and
    `debounce_mode` too (queue_core/features/debounce.py), and `rate`
    and `rate_key` (queue_core/features/rates.py)."""
    await _refresh_policies()
    row = job_row(job_type, payload, priority=priority, delay=delay, max_attempts=max_attempts,
                  idempotency_key=idempotency_key, user_id=user_id,
                  concurrency_key=concurrency_key, concurrency=concurrency, unique_for=unique_for,
                  depends_on=depends_on, on_parent_failure=on_parent_failure,
                  debounce=debounce, debounce_key=debounce_key, debounce_mode=debounce_mode,
                  sequence=sequence, on_sequence_failure=on_sequence_failure,
                  fair_key=fair_key,
                  rate=rate, rate_key=rate_key)
    return (await _write([row], conn, tracing.current_context())).ids[0]


async def aenqueue_many(jobs: Iterable[Mapping[str, Any]],
                        conn: AsyncJoinable | None = None) -> list[str]:
    """`enqueue_many`, awaited: a batch in one round trip; the ids in input order."""
    await _refresh_policies()
    rows = job_rows(jobs)
    if not rows:
        return []
    return (await _write(rows, conn, tracing.current_context())).ids


async def _refresh_policies() -> None:
    """`type_policies.refresh_overrides` on an async connection of its own, when due;
    a failure keeps what the process last read."""
    if not type_policies.due():
        return
    try:
        with translate_errors():
            own = await open_own()
        try:
            type_policies.store(await AsyncBorrowed(own).execute(sql.ALL_POLICIES))
        finally:
            await close(own)
    except (SkiplockError, sa_exc.SQLAlchemyError):  # down, or a schema before 0017
        return


async def _write(rows: list[Any], conn: AsyncJoinable | None, trace: str | None) -> Enqueued:
    """Insert `rows`, enqueued in the trace context `trace` (the calling task's span:
    queue_core/tracing.py)."""
    if not is_graph(rows):
        for last in (conn is not None, True):
            try:
                async with ajoin(conn) as c:
                    return await steps.arun(insert_steps(rows, trace),
                                            lambda step: c.execute(*step))
            except KeyArchived:
                # A key a mover archived while the insert waited (queue_core/enqueue.py,
                # `_write`): once more on our own connection, which finds it in history.
                if last:
                    raise
    if OPEN_BATCH.get() is not None:
        # Its members go in through the block's blocking connection, in its transaction.
        raise InvalidJob("inside `with skiplock.batch(...)`, enqueue with skiplock.enqueue: "
                         "a batch's members are written on its own, blocking connection")
    # Jobs with parents: their edges, and the locks on their parents, in one transaction.
    async with ajoin(conn, transaction=True) as c:
        done, _ = await steps.arun(dependencies.graph_steps(rows, trace),
                                   lambda step: c.execute(*step))
        return done


async def acancel(job_id: str, *, by: str | None = None,
                  conn: AsyncJoinable | None = None) -> CancelResult:
    """`cancel`, awaited: the result says what happened (`CancelOutcome`)."""
    return (await acancel_many([job_id], by=by, conn=conn))[0]


async def acancel_many(job_ids: Iterable[str], *, by: str | None = None,
                       conn: AsyncJoinable | None = None) -> list[CancelResult]:
    """`cancel_many`, awaited: one result per id, in the order given."""
    ids = list(dict.fromkeys(job_ids))
    who = who_cancels(by)
    async with ajoin(conn) as c:
        return await steps.arun(cancel_steps(ids, who), lambda step: c.execute(*step))


async def await_result(job_id: str, timeout: float | None = None, *,
                       listen: bool | None = None, poll_min: float = 0.05,
                       poll_max: float = 2.0) -> Job:
    """`wait`, awaited: the job once it is COMPLETED, FAILED (cancelled) or DEAD_LETTER.

    Its `result` is what the handler returned, `last_error` why it failed.
    Raises JobNotFound, and WaitTimeout after `timeout` seconds (None or
    infinity: as long as it takes); ValueError for a timeout that is not a
    number of seconds >= 0 (NaN, negative) or poll intervals that are not
    0 < poll_min <= poll_max, finite. Cancelling the awaiting task stops the
    wait and closes its connections; the job is not touched."""
    waiting.check(timeout, poll_min, poll_max)
    listen = cached_settings().listen if listen is None else listen
    deadline = waiting.deadline_of(timeout)
    listener = await _listen() if listen else None
    try:
        with translate_errors():
            reads = await open_own()
        try:
            reader = AsyncBorrowed(reads)

            async def perform(step: waiting.Read | waiting.Pause) -> Any:
                nonlocal listener
                if isinstance(step, waiting.Read):
                    return await _read(reader, step)
                if listener is None:
                    await asyncio.sleep(step.seconds)
                elif not await _notified(listener, step.job_id, step.seconds):
                    await close(listener)
                    listener = None  # lost: poll from here on
                return listener is not None

            return await steps.arun(
                waiting.waiting(job_id, timeout, deadline, listening=listener is not None,
                                poll_min=poll_min, poll_max=poll_max), perform)
        finally:
            await close(reads)
    finally:
        if listener is not None:
            await close(listener)


async def _read(reader: AsyncBorrowed, read: waiting.Read) -> Any:
    statement, params = waiting.bounded(read)
    with translate_errors():
        try:
            return waiting.first_row(await reader.execute(statement, params))
        except sa_exc.OperationalError as exc:
            if waiting.ran_out(exc, read):
                raise waiting.OutOfTime from exc
            raise


async def _listen() -> Any:
    """An async connection of our own, LISTENing; None if that fails (we poll)."""
    try:
        with translate_errors():
            conn = await open_own()
    except (SkiplockError, sa_exc.SQLAlchemyError, OSError):
        return None  # polling still works
    import psycopg  # open_own imported it

    try:
        await conn.execute(f"LISTEN {sql.DONE_CHANNEL}")
    except (psycopg.Error, OSError):
        await close(conn)
        return None
    return conn


async def _notified(conn: Any, job_id: str, timeout: float) -> bool:
    """Wait up to `timeout` for our job's notification; False if the connection broke.

    Only the driver's and the socket's errors mean that: anything else (the task's
    cancellation above all) is the caller's, and propagates."""
    import psycopg  # the listener is one: imported already

    try:
        # aclosing: the generator holds the connection's lock until it is closed.
        async with contextlib.aclosing(conn.notifies(timeout=timeout)) as notes:
            async for note in notes:
                if note.payload == job_id:
                    return True
    except (psycopg.Error, OSError):
        return False
    return True
