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
"""

from __future__ import annotations

import contextlib
import select
import time
from typing import Any

from skiplock.queue_core import sql
from skiplock.queue_core.config import cached_settings
from skiplock.queue_core.database.db import connect, get_engine
from skiplock.queue_core.errors import JobNotFound, WaitTimeout
from skiplock.queue_core.jobs import Job
from skiplock.queue_core.maintenance import get_job

FINISHED = frozenset({"COMPLETED", "FAILED", "DEAD_LETTER"})


def wait(job_id: str, timeout: float | None = None, *, listen: bool | None = None,
         poll_min: float = 0.05, poll_max: float = 2.0) -> Job:
    """Block until the job is COMPLETED, FAILED (cancelled) or DEAD_LETTER; return it.

    A job waiting for its retry is not finished. Raises JobNotFound (no such
    job, or it was deleted meanwhile) and WaitTimeout (after `timeout` seconds;
    None waits as long as it takes)."""
    listen = cached_settings().listen if listen is None else listen
    deadline = None if timeout is None else time.monotonic() + timeout
    listener = _listen() if listen else None
    try:
        with connect(autocommit=True) as c:
            c.execute(sql.MARK_WAITED, {"id": job_id})
        interval = poll_min
        while True:
            job = get_job(job_id)
            if job is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            if job.status in FINISHED:
                return job
            pause = poll_max if listener is not None else interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g}s")
                pause = min(pause, left)
            if listener is not None:
                if not _await_notification(listener, job_id, pause):
                    listener = None  # lost: poll from here on
            else:
                time.sleep(pause)
                interval = min(interval * 2, poll_max)
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail
                listener.close()


def _listen() -> Any:
    """A psycopg2 connection of our own, LISTENing; None if that fails (we poll)."""
    try:
        pooled = get_engine().raw_connection()
    except Exception:  # any driver error: polling still works
        return None
    conn: Any = pooled.dbapi_connection
    pooled.detach()  # ours alone: the engine's pool must not reset or reuse it
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {sql.DONE_CHANNEL}")
    except Exception:
        with contextlib.suppress(Exception):
            conn.close()
        return None
    return conn


def _await_notification(conn: Any, job_id: str, timeout: float) -> bool:
    """Wait up to `timeout` for our job's notification; False if the connection broke."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return True
        try:
            select.select([conn], [], [], left)
            conn.poll()
        except Exception:
            return False
        ours = any(n.payload == job_id for n in conn.notifies)
        conn.notifies.clear()
        if ours:
            return True
