"""Every class of database error, named and decided in one place.

`classify(exc)` says which fault an exception is; the fault says what to do
with it: whether the connection must be thrown away (a connection that failed,
was terminated, timed out on our side or answers read-only is never reused),
whether the database as a whole is out for now (an outage to wait out), and
whether the server refuses us for good (a worker that cannot boot). Callers
decide what the fault costs (an attempt, a back-off); they do not decide what
it is.

Why read-only discards the connection: after a failover to a standby, or while
a database is set `default_transaction_read_only`, every session opened during
the fault keeps that default when the database is writable again; only a new
connection sees the database as it is now.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc


class Fault(enum.Enum):
    CONNECTION_LOST = "connection lost"  # the socket broke, or the server vanished mid-statement
    ADMIN_SHUTDOWN = "terminated by the server"  # pg_terminate_backend, a restart, a crash
    READ_ONLY = "database is read-only"
    SERIALIZATION = "serialization failure"
    DEADLOCK = "deadlock"
    LOCK_TIMEOUT = "lock timeout"
    STATEMENT_TIMEOUT = "statement timeout"
    CLIENT_TIMEOUT = "no answer in time"  # our own deadline (queue_core/database/bounds.py)
    NO_TIME_LEFT = "no time left for the database in this turn"  # never sent
    TOO_MANY_CONNECTIONS = "too many connections"
    REFUSED = "connection refused"  # nothing listens, or the server is starting or stopping
    REJECTED = "rejected for good"  # wrong password, no such database or role, no right
    OTHER = "database error"  # a statement the server rejected: a bug, not an outage

    @property
    def discards_connection(self) -> bool:
        """The connection must not be used again (it is closed and invalidated)."""
        return self in _DISCARD

    @property
    def outage(self) -> bool:
        """The database is out for now: back off and try again, nobody is to blame."""
        return self in _OUTAGE

    @property
    def server_answered(self) -> bool:
        """The server is up and judged the statement (a timeout, a conflict): the
        work that ran into it really failed, the connection is fine."""
        return self in _ANSWERED


_DISCARD = frozenset({Fault.CONNECTION_LOST, Fault.ADMIN_SHUTDOWN, Fault.READ_ONLY,
                      Fault.CLIENT_TIMEOUT, Fault.REFUSED})
_OUTAGE = frozenset({Fault.CONNECTION_LOST, Fault.ADMIN_SHUTDOWN, Fault.READ_ONLY,
                     Fault.CLIENT_TIMEOUT, Fault.NO_TIME_LEFT, Fault.TOO_MANY_CONNECTIONS,
                     Fault.REFUSED, Fault.LOCK_TIMEOUT, Fault.STATEMENT_TIMEOUT})
_ANSWERED = frozenset({Fault.SERIALIZATION, Fault.DEADLOCK, Fault.LOCK_TIMEOUT,
                       Fault.STATEMENT_TIMEOUT, Fault.OTHER})

# SQLSTATE codes (PostgreSQL, Appendix A) and classes.
_BY_CODE = {
    "57P01": Fault.ADMIN_SHUTDOWN,  # admin_shutdown (pg_terminate_backend, fast shutdown)
    "57P02": Fault.ADMIN_SHUTDOWN,  # crash_shutdown
    "57P03": Fault.REFUSED,  # cannot_connect_now (starting up, shutting down, recovery)
    "25006": Fault.READ_ONLY,  # read_only_sql_transaction
    "40001": Fault.SERIALIZATION,
    "40P01": Fault.DEADLOCK,
    "55P03": Fault.LOCK_TIMEOUT,  # lock_not_available
    "57014": Fault.STATEMENT_TIMEOUT,  # query_canceled: statement_timeout, or a cancel
    "53300": Fault.TOO_MANY_CONNECTIONS,
    "3D000": Fault.REJECTED,  # invalid_catalog_name: no such database
    "42501": Fault.REJECTED,  # insufficient_privilege
}
_BY_CLASS = {
    "08": Fault.CONNECTION_LOST,  # connection_exception
    "28": Fault.REJECTED,  # invalid_authorization_specification
    "53": Fault.TOO_MANY_CONNECTIONS,  # insufficient_resources (out of memory, disk, slots)
}
# Errors raised by libpq itself carry no SQLSTATE: read their words.
_BY_WORDS = (
    ("no answer within", Fault.CLIENT_TIMEOUT),
    ("no time left", Fault.NO_TIME_LEFT),
    ("too many connections", Fault.TOO_MANY_CONNECTIONS),
    ("password authentication failed", Fault.REJECTED),
    ("no pg_hba.conf entry", Fault.REJECTED),
    ("does not exist", Fault.REJECTED),
    ("permission denied", Fault.REJECTED),
    ("connection refused", Fault.REFUSED),
    ("could not connect", Fault.REFUSED),
    ("the database system is", Fault.REFUSED),  # ... starting up / shutting down
    ("timeout expired", Fault.REFUSED),  # connect_timeout
    ("could not translate host name", Fault.REFUSED),
    ("terminating connection", Fault.ADMIN_SHUTDOWN),
    ("read-only transaction", Fault.READ_ONLY),
    ("server closed the connection", Fault.CONNECTION_LOST),
    ("connection already closed", Fault.CONNECTION_LOST),
    ("ssl connection has been closed", Fault.CONNECTION_LOST),
    ("connection not open", Fault.CONNECTION_LOST),
    ("cursor already closed", Fault.CONNECTION_LOST),
    ("server conn crashed", Fault.CONNECTION_LOST),  # PgBouncer lost its server connection
    ("query_wait_timeout", Fault.CLIENT_TIMEOUT),  # PgBouncer gave up waiting for a server
    ("pgbouncer cannot connect to server", Fault.REFUSED),
    ("eof detected", Fault.CONNECTION_LOST),
    ("broken pipe", Fault.CONNECTION_LOST),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cursor: BaseException | None = exc
    while cursor is not None and id(cursor) not in seen:
        seen.add(id(cursor))
        yield cursor
        if isinstance(cursor, sa_exc.DBAPIError) and cursor.orig is not None:
            yield cursor.orig
        cursor = cursor.__cause__ or cursor.__context__


def sqlstate(err: BaseException | None) -> str | None:
    """The SQLSTATE of a driver error: psycopg2 names it `pgcode`, psycopg 3 `sqlstate`
    (an application's connection may be either, queue_core/database/borrowed.py)."""
    code = getattr(err, "pgcode", None) or getattr(err, "sqlstate", None)
    return code if isinstance(code, str) and code else None


def classify(exc: BaseException) -> Fault | None:
    """The fault behind `exc` (itself, its driver error, or what caused it); None when
    it is no database error at all."""
    database = False
    for err in _chain(exc):
        code = sqlstate(err)
        if code is not None:
            database = True
            if code in _BY_CODE:
                return _BY_CODE[code]
            if code[:2] in _BY_CLASS:
                return _BY_CLASS[code[:2]]
    words = " ".join(str(err).lower() for err in _chain(exc))
    for phrase, fault in _BY_WORDS:
        if phrase in words:
            return fault
    for err in _chain(exc):
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return Fault.CONNECTION_LOST
    for err in _chain(exc):
        module = type(err).__module__
        if module.startswith(("psycopg", "sqlalchemy")) or type(err).__name__ in (
                "DatabaseUnavailable",):
            database = True
            if type(err).__name__ in ("OperationalError", "InterfaceError"):
                return Fault.CONNECTION_LOST
    return Fault.OTHER if database else None


def is_database_error(exc: BaseException) -> bool:
    return classify(exc) is not None


def server_answered(exc: BaseException) -> bool:
    """Whether the server judged the statement behind `exc` (a timeout, a deadlock), as
    opposed to a connection that went away with its transaction."""
    fault = classify(exc)
    return fault is not None and fault.server_answered
