"""Time bounds on database work: `with bounded(1.0): ...` never waits much longer.

The pool's master must keep its timing (signals, reaping, job timeouts, lease
fencing) whatever the database does: a row or table lock held for a minute, a
server that accepts connections and never answers, a restart. Inside
`bounded(seconds)` every statement carries two limits:

- server-side, `SET LOCAL lock_timeout` and `statement_timeout` sent in the
  same round trip as the statement (one simple query is one transaction, so
  this works through PgBouncer in transaction mode too, where a session `SET`
  would leak to other clients), set below the bound so that a locked row or a
  slow plan ends with a clean error and the connection stays usable;
- client-side, a deadline on every wait of the driver (connect, send, answer),
  through psycopg2's wait callback: a server that never answers cannot hold
  us, the connection is closed by the driver and invalidated (queue_core/
  faults.py: CLIENT_TIMEOUT discards the connection).

Bounds nest (the inner one cannot outlast the outer), and work begun with no
time left fails at once without touching the network. Outside `bounded` the
wait callback simply waits, as the driver would: a handler's own statements
are never limited by the pool.
"""

from __future__ import annotations

import contextvars
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions

from skiplock.queue_core.errors import DatabaseUnavailable

# Fractions of the time left given to the server's own timeouts: it must answer
# (and keep the connection) before our deadline cuts the connection.
STATEMENT_SHARE = 0.8
LOCK_SHARE = 0.5
MIN_LEFT_S = 0.02
CONNECT_TIMEOUT_S = 5.0  # as the engine's connect_timeout (queue_core/database/db.py)

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "skiplock_db_deadline", default=None)


class NoAnswer(psycopg2.OperationalError):
    """The server gave no answer within the bound."""


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Database work inside ends within about `seconds` (or raises DatabaseUnavailable)."""
    deadline = time.monotonic() + max(0.0, seconds)
    outer = _deadline.get()
    token = _deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextmanager
def unbounded() -> Iterator[None]:
    """Lift the bound (a handler's transaction, inside a bounded caller)."""
    token = _deadline.set(None)
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def statement_prefix() -> str:
    """`SET LOCAL` limits for the next statement, or "" when unbounded; raises
    DatabaseUnavailable when no time is left (nothing is sent)."""
    left = time_left()
    if left is None:
        return ""
    if left < MIN_LEFT_S:
        raise DatabaseUnavailable("no time left for the database in this turn")
    statement_ms = max(10, int(left * STATEMENT_SHARE * 1000))
    lock_ms = max(10, int(left * LOCK_SHARE * 1000))
    return f"SET LOCAL lock_timeout = {lock_ms}; SET LOCAL statement_timeout = {statement_ms}; "


def wait(conn: Any) -> None:
    """psycopg2's wait callback: poll the connection, up to the bound's deadline.

    Connecting is always bounded: libpq's own `connect_timeout` does not apply to a
    connection polled like this, and a server that accepts and never answers would
    hold even a command line tool forever."""
    deadline = _deadline.get()
    if conn.status == psycopg2.extensions.STATUS_SETUP:
        connect_by = time.monotonic() + CONNECT_TIMEOUT_S
        deadline = connect_by if deadline is None else min(deadline, connect_by)
    # A bound already spent before this wait began (a pooled connection's reset on
    # its way back, in a turn whose budget the work before it used up) is no sign
    # of a database that does not answer: say so, and it is not taken for an outage.
    spent = deadline is not None and deadline <= time.monotonic()
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        fd = conn.fileno()
        if state == psycopg2.extensions.POLL_READ:
            ready = select.select([fd], [], [], timeout)[0]
        elif state == psycopg2.extensions.POLL_WRITE:
            ready = select.select([], [fd], [], timeout)[1]
        else:
            raise psycopg2.OperationalError(f"bad poll state: {state}")
        if not ready and timeout is not None:
            # The driver closes the connection when this raises: it is never reused.
            if spent:
                raise NoAnswer("no time left for the database in this turn")
            raise NoAnswer("no answer within the time bound")


_installed = False


def install() -> None:
    """Route every psycopg2 wait of this process through `wait` (idempotent)."""
    global _installed
    if not _installed:
        psycopg2.extensions.set_wait_callback(wait)
        _installed = True


def before_cursor_execute(conn: Any, cursor: Any, statement: str, parameters: Any,
                          context: Any, executemany: bool) -> tuple[str, Any]:
    """SQLAlchemy event (retval=True): prefix the bound's limits to the statement."""
    prefix = statement_prefix()
    if prefix and not executemany:
        statement = prefix + statement
    return statement, parameters
