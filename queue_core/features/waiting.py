"""Waiting for a job to finish: `skiplock.wait(job_id, timeout=)`.

The waiter marks the job ("notifyDone"), so that the statement that ends it
NOTIFYs `skiplock_done` with its id, and LISTENs on a connection of its own;
it re-reads the job when a notification arrives, and at least every
`poll_max` seconds anyway, so a notification that never comes (a lost
connection, or LISTEN through PgBouncer in transaction mode, where it is
silently useless) costs at most that long. With `listen=False` (or
SKIPLOCK_LISTEN=0) it only polls, from `poll_min` growing to `poll_max`.
LISTEN is opened before the job is read, so an end between the read and the
wait is never missed.

The timeout holds whatever the database does: each statement runs with a
`statement_timeout` of the time left (in the same query string, so it
costs no round trip and leaves the pooled connection as it was), so a
transaction that holds the job's row lock (an operator's `SELECT ... FOR
UPDATE`) or a table lock delays the answer by no more than the timeout.
Only the driver's and the socket's own errors are taken for a lost
LISTEN connection: an exception that the caller's signal handler raises
while `wait` sleeps comes out of `wait`.

The wait itself is written once, as the steps `waiting` yields (a read, a
pause; queue_core/database/steps.py): `wait` performs them with psycopg2 and
`time.sleep`, `skiplock.await_result` (queue_core/aio.py) on the event loop.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import select
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import psycopg2
from sqlalchemy import TextClause, text
from sqlalchemy import exc as sa_exc

from skiplock.queue_core import sql
from skiplock.queue_core.config import cached_settings
from skiplock.queue_core.database import steps
from skiplock.queue_core.database.db import connect, get_engine
from skiplock.queue_core.database.faults import sqlstate
from skiplock.queue_core.errors import JobNotFound, SkiplockError, WaitTimeout
from skiplock.queue_core.features import batches
from skiplock.queue_core.jobs import Job

FINISHED = frozenset({"COMPLETED", "FAILED", "DEAD_LETTER"})
QUERY_CANCELED = "57014"  # statement_timeout
# The last read after a lock outlasted the timeout, to say what the job is: a row lock
# does not hold up a read, a table lock might.
LAST_READ_S = 0.25


def wait(job_id: str, timeout: float | None = None, *, listen: bool | None = None,
         poll_min: float = 0.05, poll_max: float = 2.0) -> Job:
    """Block until the job is COMPLETED, FAILED (cancelled) or DEAD_LETTER; return it.

    Given a batch's id (`skiplock.batch`), wait for the batch's callback job, which
    runs once every member ended, and return it.

    A job waiting for its retry is not finished. Raises JobNotFound (no such
    job, or it was deleted meanwhile) and WaitTimeout (after `timeout` seconds;
    None, or infinity, waits as long as it takes). A timeout that is not a
    number of seconds >= 0 (NaN, a negative number) raises ValueError, as do
    poll intervals that are not 0 < poll_min <= poll_max, finite."""
    check(timeout, poll_min, poll_max)
    listen = cached_settings().listen if listen is None else listen
    deadline = deadline_of(timeout)
    listener = _listen() if listen else None

    def perform(step: Read | Pause) -> Any:
        nonlocal listener
        if isinstance(step, Read):
            return _execute(step)
        if listener is None:
            time.sleep(step.seconds)
        elif not _await_notification(listener, step.job_id, step.seconds):
            _close(listener)
            listener = None  # lost: poll from here on
        return listener is not None

    try:
        return steps.run(waiting(job_id, timeout, deadline, listening=listener is not None,
                                 poll_min=poll_min, poll_max=poll_max), perform)
    finally:
        if listener is not None:
            _close(listener)


@dataclass(frozen=True, slots=True)
class Read:
    """Run `statement` within the deadline; the first row it returns (or None) is sent back."""
    statement: TextClause
    params: dict[str, Any]
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait up to `seconds` for job `job_id`'s notification (or sleep, when not
    listening); sent back: whether the waiter is still listening (False once its
    LISTEN broke)."""
    seconds: float
    job_id: str  # the job waited for: a batch's callback when a batch's id was given


def deadline_of(timeout: float | None) -> float | None:
    """When a wait of `timeout` seconds (checked: `check`), begun now, runs out."""
    return None if timeout is None or math.isinf(timeout) else time.monotonic() + timeout


def waiting(job_id: str, timeout: float | None, deadline: float | None, *, listening: bool,
            poll_min: float, poll_max: float) -> Generator[Read | Pause, Any, Job]:
    """A wait, as the steps `wait` and `skiplock.await_result` perform (queue_core/database/
    steps.py): mark the job, read it until it has finished, pausing in between.
    Given a batch's id (`skiplock.batch`), the job is the batch's callback."""
    if job_id.startswith(batches.PREFIX):
        # A batch ends with its callback, which runs once every member ended.
        try:
            found = yield Read(sql.BATCH_CALLBACK, {"id": job_id}, deadline)
        except OutOfTime:
            raise WaitTimeout(f"batch {job_id} is still unfinished after {timeout:g}s") from None
        if found is None:
            raise JobNotFound(f"no batch with id {job_id}")
        job_id = found.callback_id
    status = "unfinished"
    try:
        yield Read(sql.MARK_WAITED, {"id": job_id}, deadline)
        interval = poll_min
        while True:
            job = _job(job_id, (yield Read(sql.GET_JOB, {"id": job_id}, deadline)))
            status = job.status
            if job.status in FINISHED:
                return job
            pause = poll_max if listening else interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OutOfTime
                pause = min(pause, left)
            polled = not listening
            listening = yield Pause(pause, job_id)
            if polled:
                interval = min(interval * 2, poll_max)
    except OutOfTime:
        if status == "unfinished":  # the mark waited for a lock all that time
            with contextlib.suppress(OutOfTime):
                last = yield Read(sql.GET_JOB, {"id": job_id}, time.monotonic() + LAST_READ_S)
                status = _job(job_id, last).status
        raise WaitTimeout(f"job {job_id} is still {status} after {timeout:g}s") from None


def check(timeout: Any, poll_min: Any, poll_max: Any) -> None:
    """ValueError, before anything is sent, for a timeout or poll intervals `wait` refuses."""
    # NaN compares false with everything: a NaN timeout never ran out.
    def seconds(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        number = float(value)
        return None if math.isnan(number) or number < 0 else number

    if timeout is not None and seconds(timeout) is None:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    low, high = seconds(poll_min), seconds(poll_max)
    if low is None or high is None or not 0 < low <= high < math.inf:
        raise ValueError("poll_min and poll_max must be seconds, 0 < poll_min <= poll_max, "
                         f"finite, not {poll_min!r} and {poll_max!r}")


class OutOfTime(Exception):
    """The deadline passed, maybe while a statement waited for a lock."""


# A statement bounded by the time left: `statement_timeout` set for this query string
# alone (one simple query is one transaction, and set_config's `true` ends with it).
_BOUNDED: dict[TextClause, TextClause] = {}


def bounded(read: Read) -> tuple[TextClause, dict[str, Any]]:
    """The statement and parameters to send for `read`: limited to the time left, or
    OutOfTime when none is."""
    if read.deadline is None:
        return read.statement, read.params
    left = read.deadline - time.monotonic()
    if left <= 0:
        raise OutOfTime
    limited = _BOUNDED.get(read.statement)
    if limited is None:
        limited = _BOUNDED[read.statement] = text(
            "SELECT set_config('statement_timeout', :skiplock_timeout_ms, true); "
            + read.statement.text)
    # 0 would mean no limit at all: at least a millisecond.
    return limited, {**read.params, "skiplock_timeout_ms": str(max(1, math.ceil(left * 1000)))}


def ran_out(exc: sa_exc.OperationalError, read: Read) -> bool:
    """Whether `exc` is the statement_timeout that `bounded` set for `read`."""
    return read.deadline is not None and sqlstate(exc.orig) == QUERY_CANCELED


def first_row(result: Any) -> Any:
    """What a `Read` is sent back: the first row, or None (no row, or a statement that
    returns none)."""
    return result.first() if result.returns_rows else None


def _execute(read: Read) -> Any:
    statement, params = bounded(read)
    with connect(autocommit=True) as c:
        try:
            return first_row(c.execute(statement, params))
        except sa_exc.OperationalError as exc:
            if ran_out(exc, read):
                raise OutOfTime from exc
            raise


def _job(job_id: str, row: Any) -> Job:
    if row is None:
        raise JobNotFound(f"no job with id {job_id!r}")
    return Job.from_row(row)


def _close(listener: Any) -> None:
    with contextlib.suppress(psycopg2.Error, OSError):  # a broken connection
        listener.close()


def _listen() -> Any:
    """A psycopg2 connection of our own, LISTENing; None if that fails (we poll)."""
    try:
        pooled = get_engine().raw_connection()
    except (SkiplockError, sa_exc.SQLAlchemyError, psycopg2.Error, OSError):
        return None  # polling still works
    conn: Any = pooled.dbapi_connection
    pooled.detach()  # ours alone: the engine's pool must not reset or reuse it
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {sql.DONE_CHANNEL}")
    except (psycopg2.Error, OSError):
        with contextlib.suppress(psycopg2.Error, OSError):
            conn.close()
        return None
    return conn


def _await_notification(conn: Any, job_id: str, timeout: float) -> bool:
    """Wait up to `timeout` for our job's notification; False if the connection broke.

    Only the driver's and the socket's errors mean that: anything else (what a signal
    handler of the caller raised during the select) is the caller's, and propagates."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return True
        try:
            select.select([conn], [], [], left)
            conn.poll()
        except (psycopg2.Error, OSError, ValueError):  # ValueError: a closed socket's fd
            return False
        ours = any(n.payload == job_id for n in conn.notifies)
        conn.notifies.clear()
        if ours:
            return True
