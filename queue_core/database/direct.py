"""The process's own autocommit connection, for enqueues that join no caller's transaction.

An `enqueue()` without `conn` is one statement that commits by itself. Through
the engine it cost a pool check-out, SQLAlchemy's execution layer, and two
switches of the pooled connection to autocommit and back (psycopg2's
`set_isolation_level`, a good part of the call: docs/benchmarks.md, "Figures
behind the code"); here it is one psycopg2 cursor on a
connection that stays in autocommit, and the hot insert is a server-side
prepared statement, which saves the server parsing and planning it each time.

- One connection per process, opened on first use from the engine's URL and
  libpq parameters, and kept while the engine is the same (`db.reset_engine`
  or another URL gives a new one).
- Never across a fork (docs/lessons.md): a child never uses its parent's
  connection, nor closes it (closing sends the server a Terminate on the shared
  socket); its copy of the socket is pointed at /dev/null first.
- One thread at a time: a thread that finds it busy goes through the engine's
  pool as before (`acquire` returns None), so threads never queue behind one.
- Errors read as through the engine: psycopg2's errors are wrapped in
  SQLAlchemy's classes, so `db.translate_errors` gives the same one-line
  DatabaseUnavailable / PermissionDenied (password scrubbed), and a fault that
  discards a connection (`faults.classify`) drops this one; the next call
  opens a new one. Statements carry the time bound of `bounds.bounded()`.
- Behind PgBouncer in transaction mode a prepared statement may be missing on
  the server connection a statement lands on: the statement is then run
  unprepared, and this process prepares nothing from then on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import threading
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql.elements import TextClause

from skiplock.queue_core.database import bounds, db

_UNDEFINED_PREPARED = "26000"  # invalid_sql_statement_name: no such prepared statement
_DUPLICATE_PREPARED = "42P05"

def _rows(cur: Any) -> list[Any]:
    if cur.description is None:
        return []
    row = namedtuple("row", [d.name for d in cur.description])  # type: ignore[misc]
    return [row(*values) for values in cur.fetchall()]


class Prepared:
    """A statement with positional parameters ($1, $2, ...), prepared per connection;
    `before` is sent ahead of it in the same query string (one transaction)."""

    def __init__(self, body: str, count: int, before: str = "") -> None:
        self.body = body
        # Named by its text: the same name always means the same statement, also on
        # a server connection that PgBouncer shares between processes.
        self.name = "skiplock_" + hashlib.sha1(body.encode()).hexdigest()[:16]
        self.execute = f"{before}EXECUTE {self.name} ({', '.join(['%s'] * count)})"
        # The unprepared form, for when PREPARE cannot be used ($n may occur twice).
        self.plain = before + re.sub(r"\$(\d+)", r"%(p\1)s", body)
        self.count = count


def _numbered(args: Sequence[Any]) -> dict[str, Any]:
    return {f"p{n}": value for n, value in enumerate(args, 1)}


class KeptConnection:
    """The `execute` the queue's writes use, on this process's autocommit connection."""

    def __init__(self, raw: psycopg2.extensions.connection, engine: Engine) -> None:
        self.raw = raw
        self.engine = engine
        self.pid = os.getpid()
        self.prepared: set[str] = set()
        self.cursor = raw.cursor()  # one thread at a time uses it (`acquire`)

    def execute(self, statement: TextClause, params: dict[str, Any] | None = None) -> list[Any]:
        cur = self.cursor
        self._run(cur, db.driver_sql(statement), params or {})
        return _rows(cur)

    def execute_prepared(self, statement: Prepared, args: Sequence[Any]) -> list[Any]:
        cur = self.cursor
        if not _prepare_off and statement.name not in self.prepared:
            try:
                self._run(cur, f"PREPARE {statement.name} AS {statement.body}", None)
            except sa_exc.DBAPIError as exc:
                if getattr(exc.orig, "pgcode", None) != _DUPLICATE_PREPARED:
                    raise
            self.prepared.add(statement.name)
        if _prepare_off:
            self._run(cur, statement.plain, _numbered(args))
        else:
            try:
                self._run(cur, statement.execute, args)
            except sa_exc.DBAPIError as exc:
                if getattr(exc.orig, "pgcode", None) != _UNDEFINED_PREPARED:
                    raise
                # Prepared on another server connection than this statement
                # reached (a transaction pooler): nothing ran, run it plainly.
                _no_prepare()
                self._run(cur, statement.plain, _numbered(args))
        return _rows(cur)

    def _run(self, cur: Any, text: str, params: Any) -> None:
        prefix = bounds.statement_prefix()
        try:
            cur.execute(prefix + text if prefix else text, params)
        except psycopg2.Error as exc:
            lost, error = db.driver_error(exc, self.raw, text, params, hide_parameters=True)
            if lost:
                _discard(self)
            raise error from exc


_lock = threading.Lock()
_kept: KeptConnection | None = None
_prepare_off = False


def _no_prepare() -> None:
    global _prepare_off
    _prepare_off = True


def acquire() -> KeptConnection | None:
    """This process's connection for one call, or None when another thread has it.

    Release it with `release`. Connection errors are psycopg2's (wrap the call in
    `db.translate_errors`)."""
    global _kept
    if not _lock.acquire(blocking=False):
        return None
    kept = _kept
    if (kept is not None and kept.pid == os.getpid() and kept.engine is db.current_engine()
            and not kept.raw.closed and not _spoke(kept.raw)):
        return kept
    try:
        engine = db.get_engine()
        kept = _kept
        if kept is not None and (kept.pid != os.getpid() or kept.engine is not engine
                                 or kept.raw.closed or _spoke(kept.raw)):
            _forget(kept)
            kept = _kept = None
        if kept is None:
            kept = _kept = KeptConnection(_open(engine), engine)
        return kept
    except BaseException:
        _lock.release()
        raise


def _spoke(raw: psycopg2.extensions.connection) -> bool:
    """Whether the server sent something unasked on this idle connection.

    Between statements it has nothing to say (it LISTENs to nothing), but a
    terminated session (pg_terminate_backend, a restart, idle_session_timeout)
    leaves its FATAL message and the end of the stream here: such a connection
    is replaced before a statement is sent, so that nothing fails for it."""
    try:
        return bool(select.select([raw.fileno()], [], [], 0)[0])
    except (OSError, ValueError, psycopg2.Error):
        return True


def release(kept: KeptConnection) -> None:
    _lock.release()


def _open(engine: Engine) -> psycopg2.extensions.connection:
    raw = db.raw_connect()
    try:
        raw.autocommit = True
    except BaseException:
        raw.close()
        raise
    return raw


def _discard(kept: KeptConnection) -> None:
    global _kept
    if _kept is kept:
        _kept = None
    _forget(kept)


def _forget(kept: KeptConnection) -> None:
    """Close `kept`, or, in a child that inherited it, let go of it without a word to
    the server: the parent still talks to it over the same socket."""
    if kept.pid != os.getpid():
        _detach_socket(kept.raw)
    with contextlib.suppress(psycopg2.Error):
        kept.raw.close()


def _detach_socket(raw: psycopg2.extensions.connection) -> None:
    if raw.closed:
        return
    try:
        fd = raw.fileno()
    except psycopg2.Error:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)  # the child's copy of the socket now leads nowhere
    finally:
        os.close(null)


def _after_fork_in_child() -> None:
    global _lock, _kept
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork
    if _kept is not None:
        kept, _kept = _kept, None
        _forget(kept)


os.register_at_fork(after_in_child=_after_fork_in_child)


def close() -> None:
    """Close this process's connection (tests, and a process that ends its database work)."""
    global _kept
    with _lock:
        if _kept is not None:
            kept, _kept = _kept, None
            _forget(kept)


db.on_reset.append(close)
