"""Connections: one engine per process, driver errors translated in one place.

docs/lessons.md: no connection may cross a fork. The engine is keyed by the pid
that made it; a child that inherited its parent's engine gets a new one, and
the inherited pool is dropped with `dispose(close=False)` so that the child
never closes (or uses) the parent's sockets.

No `pool_pre_ping`: it would cost a round trip per transaction. A connection
that died with the server makes its first statement fail; SQLAlchemy then
invalidates the whole pool, the failure reaches the caller as
`DatabaseUnavailable`, and the next call reconnects. Which errors throw a
connection away (lost, terminated, read-only, no answer in time) is decided
by `faults.classify`, here, for every connection of the process; every
statement also honours the time bound of `bounds.bounded()`.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, overload

import psycopg2
import psycopg2.extensions
from sqlalchemy import Connection, CursorResult, Engine, TextClause, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session

from skiplock.queue_core import sql
from skiplock.queue_core.database import bounds, faults, grants
from skiplock.queue_core.database.borrowed import BorrowedConnection, borrow
from skiplock.queue_core.database.urls import database_url, redact, scrub
from skiplock.queue_core.errors import DatabaseUnavailable, PermissionDenied

if TYPE_CHECKING:
    from skiplock.queue_core.database.borrowed import DBAPIConnection

# What a `conn=` of the public calls takes: SQLAlchemy's (on any driver), or a
# caller's own psycopg2 or psycopg 3 connection (queue_core/database/borrowed.py).
Joinable: TypeAlias = "Connection | Session | DBAPIConnection | BorrowedConnection"

_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None
_engine_url: str | None = None
# A pool child binds the job's connection, or a function that returns it when the
# job first asks (pool/group_commit.py: the savepoint is taken only then).
_job_connection: contextvars.ContextVar[Connection | Callable[[], Connection] | None] = (
    contextvars.ContextVar("skiplock_job_connection", default=None)
)


def get_engine(url: str | None = None) -> Engine:
    """This process's engine for `url` (default: the configured database)."""
    global _engine, _engine_pid, _engine_url
    with _lock:
        if _engine is not None and _engine_pid != os.getpid():
            _engine.dispose(close=False)  # inherited across fork: forget, never close
            _engine = None
        if url is None and _engine is not None and _engine_pid == os.getpid():
            return _engine
        url = url or database_url()
        if _engine is None or _engine_url != url:
            if _engine is not None:
                _engine.dispose()
            _engine = create_engine(
                url,
                pool_size=5,
                max_overflow=10,
                connect_args=connect_args(),
            )
            _watch(_engine)
            _engine_pid, _engine_url = os.getpid(), url
        return _engine


def current_engine() -> Engine | None:
    """The engine `get_engine()` last made, without its lock or fork check (queue_core/
    direct.py compares it with the one its connection was opened from, per enqueue)."""
    return _engine


def connect_args() -> dict[str, Any]:
    """libpq parameters of every connection this process opens (queue_core/database/direct.py too)."""
    return {
        "application_name": f"skiplock[{os.getpid()}]",
        "connect_timeout": 5,
        # Notice a dead primary (failover, cable pulled) in about a minute.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def _watch(engine: Engine) -> None:
    """Time bounds on every statement, and the one rule for discarding connections."""
    bounds.install()
    event.listen(engine, "before_cursor_execute", bounds.before_cursor_execute, retval=True)
    event.listen(engine, "handle_error", _on_error)


def _on_error(context: ExceptionContext) -> None:
    fault = faults.classify(context.original_exception)
    if fault is not None and fault.discards_connection:
        # SQLAlchemy closes this connection and recycles the rest of the pool: after a
        # failover or a read-only spell, every connection of that time is suspect.
        context.is_disconnect = True


# Called by reset_engine: connections made from the engine's URL outside its pool
# (queue_core/database/direct.py) are closed with it.
on_reset: list[Callable[[], None]] = []


def reset_engine() -> None:
    """Forget the engine (after DATABASE_URL changed, or in tests)."""
    global _engine, _engine_pid, _engine_url
    with _lock:
        if _engine is not None:
            _engine.dispose(close=_engine_pid == os.getpid())
        _engine, _engine_pid, _engine_url = None, None, None
    for hook in on_reset:
        hook()


def as_connection(conn: Connection | Session) -> Connection:
    return conn.connection() if isinstance(conn, Session) else conn


_CONFLICTS = frozenset({faults.Fault.SERIALIZATION, faults.Fault.DEADLOCK})


@contextmanager
def translate_errors(url: str | None = None) -> Iterator[None]:
    """Turn a lost or refused connection into DatabaseUnavailable (one line, no traceback)."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        if faults.classify(exc) in _CONFLICTS:
            # The server is up and judged the statement: a conflict its caller may
            # run again (a row a mover moved to history under it: history.again_if_moved),
            # not an outage to wait out.
            raise
        raise DatabaseUnavailable(_describe(exc, url)) from exc
    except sa_exc.DBAPIError as exc:
        if isinstance(exc, sa_exc.ProgrammingError) and grants.is_denied(exc):
            # A role without a grant: name the grant, no traceback.
            raise PermissionDenied(grants.explain(exc, _role(url))) from exc
        fault = faults.classify(exc)
        if exc.connection_invalidated or (fault is not None and fault.outage):
            raise DatabaseUnavailable(_describe(exc, url)) from exc
        raise
    except psycopg2.Error as exc:
        # Raised by the driver where SQLAlchemy does not wrap it: resetting a
        # connection as it goes back to the pool, when the bound ran out or the
        # server stopped answering. The driver has closed that connection.
        raise DatabaseUnavailable(_describe(exc, url)) from exc


def _role(url: str | None) -> str | None:
    try:
        return make_url(url or _engine_url or "").username
    except Exception:  # no URL to read it from: the message says "the database role"
        return None


def describe_database_error(exc: sa_exc.DBAPIError) -> str:
    """One line for an error the server returned, with no password in it."""
    if grants.is_denied(exc):
        return grants.explain(exc, _role(None))
    orig = exc.orig or exc
    lines = str(orig).strip().splitlines()
    return scrub(f"the database refused: {lines[0] if lines else type(orig).__name__}",
                 _engine_url)


def _describe(exc: sa_exc.DBAPIError | psycopg2.Error, url: str | None) -> str:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    url = url or _engine_url
    reason = scrub(" ".join(str(orig or exc).split()), url)
    where = redact(url) if url else "the configured database"
    return f"cannot use the database at {where}: {reason}"


@overload
def connect(conn: Connection | Session | None = None, *,
            autocommit: bool = False) -> AbstractContextManager[Connection]: ...


@overload
def connect(conn: Joinable | None, *,
            autocommit: bool = False) -> AbstractContextManager[Connection | BorrowedConnection]: ...


def connect(conn: Joinable | None = None, *,
            autocommit: bool = False) -> AbstractContextManager[Connection | BorrowedConnection]:
    """A transaction: the caller's when `conn` is given, else a new one committed on exit.

    `autocommit=True` is for work that is one statement (a claim, a fenced
    completion, a heartbeat): each statement commits by itself, which saves the
    BEGIN and COMMIT round trips a transaction would cost. With `conn` the
    statement joins the caller's transaction all the same: a SQLAlchemy
    Connection or Session (on any driver), or a psycopg2 or psycopg 3
    connection of the caller's (queue_core/database/borrowed.py).
    """
    return _connect(conn, autocommit)


@contextmanager
def _connect(conn: Joinable | None, autocommit: bool) -> Iterator[Connection | BorrowedConnection]:
    with translate_errors():
        if conn is not None:
            yield as_connection(conn) if isinstance(conn, (Connection, Session)) else borrow(conn)
            return
        if autocommit:
            with get_engine().connect() as own:
                own.execution_options(isolation_level="AUTOCOMMIT")
                yield own
            return
        with get_engine().begin() as own:
            yield own


def binds_on_server(conn: Connection) -> bool:
    """Whether `conn`'s driver binds parameters on the server, one statement per query
    string (psycopg 3, on an application's engine); skiplock's own engine is psycopg2's."""
    return conn.dialect.driver != "psycopg2"


class ServerBound:
    """A caller's SQLAlchemy Connection on a driver that binds on the server: the
    queue's statements that lead with another go as one query each (`sql.one_at_a_time`)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def execute(self, statement: TextClause,
                params: Mapping[str, Any] | None = None) -> CursorResult[Any]:
        *before, last = sql.one_at_a_time(statement)
        for query in before:
            self.conn.execute(query)
        return self.conn.execute(last, dict(params or {}))


class bind_job_connection:  # noqa: N801 (used as a function: `with bind_job_connection(c):`)
    """Make `conn` (the running job's transaction, or what opens it) the one
    `transaction()` yields.

    A class, not a generator: it is entered once per job, and a generator-based
    context manager costs a pool child many times more CPU than these two calls
    when its code has gone cold during a job (docs/benchmarks.md, "Figures
    behind the code")."""

    __slots__ = ("conn", "token")

    def __init__(self, conn: Connection | Callable[[], Connection]) -> None:
        self.conn = conn

    def __enter__(self) -> Connection | Callable[[], Connection]:
        self.token = _job_connection.set(self.conn)
        return self.conn

    def __exit__(self, *exc: object) -> None:
        _job_connection.reset(self.token)


@contextmanager
def transaction() -> Iterator[Connection]:
    """Where a handler writes: the job's transaction inside a pool, else a fresh one.

    Inside a pool child the handler's writes, the enqueue of the next job and
    the job's fenced completion commit together, or not at all.
    """
    bound = _job_connection.get()
    if bound is not None:
        yield bound if isinstance(bound, Connection) else bound()
        return
    with connect() as conn:
        yield conn


def execute(statement: Any, params: dict[str, Any] | None = None,
            conn: Connection | Session | None = None) -> Any:
    """Run one statement in `conn` or in a transaction of its own; return the result rows."""
    with connect(conn) as c:
        result = c.execute(statement, params or {})
        return result.fetchall() if result.returns_rows else result.rowcount


# -- the hot statements, through the driver's cursor -----------------------------
#
# A pool child claims and completes jobs many times a second. SQLAlchemy's
# execution layer (events, the result's column metadata, the switch of a pooled
# connection to autocommit and back) costs a child as much CPU per statement as
# the server's own work for a small claim (docs/benchmarks.md, "Figures behind
# the code"); for CPU-heavy jobs that is CPU taken from the handlers. These statements run on the
# DBAPI cursor of the same pooled connection instead, with the same time bounds
# (the prefix that `bounds` adds) and the same errors: a driver error comes out as
# SQLAlchemy's wrapper, after the connection was invalidated when faults.py says
# it must be discarded, so `translate_errors` and every caller see what they saw.

_DRIVER_DIALECT = PGDialect_psycopg2()
_driver_sql: dict[TextClause, str] = {}


def driver_sql(statement: TextClause) -> str:
    """`statement` as the driver takes it (`%(name)s` parameters, `%` escaped),
    compiled once per process."""
    found = _driver_sql.get(statement)
    if found is None:
        found = _driver_sql[statement] = statement.compile(dialect=_DRIVER_DIALECT).string
    return found


def run_on_driver(conn: Joinable | None, statement: TextClause,
                  params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement on the driver's cursor: in `conn`'s transaction, or alone
    (autocommit) on a pooled connection. Returns the column names and the rows
    (none for a statement that returns no rows). A caller's connection that is not
    psycopg2's under SQLAlchemy runs it as every other statement on it runs."""
    with translate_errors():
        if conn is None:
            with get_engine().connect() as own:
                raw = own.connection.dbapi_connection
                assert raw is not None
                raw.autocommit = True  # no BEGIN and COMMIT round trips: it commits itself
                try:
                    return _on_driver(own, driver_sql(statement), params)
                finally:
                    if not own.invalidated and not raw.closed:
                        raw.autocommit = False
        if isinstance(conn, (Connection, Session)):
            joined = as_connection(conn)
            if not binds_on_server(joined):
                if not joined.in_transaction():
                    # What SQLAlchemy's own execute would do: begin, so that the
                    # caller's commit() or rollback() covers this statement too.
                    joined.begin()
                return _on_driver(joined, driver_sql(statement), params)
            result = ServerBound(joined).execute(statement, params)
            if not result.returns_rows:
                return [], []
            return list(result.keys()), [tuple(row) for row in result]
        rows = borrow(conn).execute(statement, params)
        return list(rows.keys()), [tuple(row) for row in rows]


def _on_driver(conn: Connection, statement: str,
               params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    raw = conn.connection.dbapi_connection
    assert raw is not None
    text = bounds.statement_prefix() + statement
    try:
        cur = raw.cursor()
        try:
            cur.execute(text, params)
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], list(cur.fetchall())
        finally:
            cur.close()
    except psycopg2.Error as exc:
        lost, error = driver_error(exc, raw, statement, params)
        if lost:
            # As `_on_error` does for SQLAlchemy's own statements: this connection
            # goes, and so do the pooled ones of the same time (a failover, say).
            conn.invalidate(exc)
            conn.engine.dispose()
        raise error from exc


def driver_error(exc: psycopg2.Error, raw: Any, statement: str, params: Any, *,
                 lost: bool = False, hide_parameters: bool = False
                 ) -> tuple[bool, sa_exc.DBAPIError]:
    """An error of a statement run on a raw psycopg2 connection: whether that connection
    must go (it is closed, `lost` says so, or faults.py does), and the error as
    SQLAlchemy's class for it, so that `translate_errors` reads it as it reads the
    engine's own."""
    fault = faults.classify(exc)
    lost = lost or bool(raw is None or raw.closed) or (
        fault is not None and fault.discards_connection)
    return lost, sa_exc.DBAPIError.instance(statement, params, exc, psycopg2.Error,
                                            hide_parameters=hide_parameters,
                                            connection_invalidated=lost)


def raw_connect(**extra: Any) -> Any:
    """A psycopg2 connection of its own, outside the engine's pool, with the engine's
    URL and this process's libpq parameters (`extra`: psycopg2's own, e.g. async_)."""
    engine = get_engine()
    args, params = engine.dialect.create_connect_args(engine.url)
    return psycopg2.connect(*args, **{**params, **connect_args(), **extra})


def open_async() -> Any:
    """`raw_connect` in psycopg2's asynchronous mode (always autocommit), connected
    within the connect bound of `bounds.wait`; raises the driver's error."""
    raw = raw_connect(async_=True)
    try:
        bounds.wait(raw)
    except BaseException:
        raw.close()
        raise
    return raw
