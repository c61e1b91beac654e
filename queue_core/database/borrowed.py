"""An application's own DBAPI connection, psycopg2's or psycopg 3's, joined in its open transaction.

SQLAlchemy cannot join a DBAPI connection's transaction without taking over
its commit and rollback (closing a SQLAlchemy Connection rolls back what it
began). So the queue's statements, which are SQLAlchemy `text()` constants,
are compiled once to the `%(name)s` form and run on a cursor of the caller's
connection: the rows are written in whatever transaction it has open and
exist only if the caller commits; the caller's commit and rollback stay its own.

Both drivers get the same query string, bound on the client. psycopg2 always
binds there; for psycopg 3 a `ClientCursor` does, which also lets one query
string hold two statements (`sql.WAKE`'s NOTIFY before an insert, as on
skiplock's own connections; a cursor that binds on the server refuses that).
psycopg 3 shows the first statement's result and psycopg2 the last, the one
the queue reads: the psycopg 3 cursor is moved on to it.

The cursor is a plain one whatever the connection makes by default (a
RealDictCursor, psycopg 3's dict_row): rows are read by position and handed
out as named tuples, as SQLAlchemy's rows are read. Errors come out as
SQLAlchemy's classes (IntegrityError, OperationalError, ...), as through an
engine, so that every caller reads them one way.

skiplock never imports psycopg 3 itself (the import would lengthen the start
of every process, docs/benchmarks.md, "Figures behind the code"): a connection
of it can only come from an application that did.
"""

from __future__ import annotations

import sys
from collections import namedtuple
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import psycopg2
import psycopg2.extensions
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect
from sqlalchemy.engine import Compiled
from sqlalchemy.sql.elements import TextClause

if TYPE_CHECKING:
    import psycopg

    # What `conn=` takes besides SQLAlchemy's Connection and Session.
    DBAPIConnection: TypeAlias = psycopg2.extensions.connection | psycopg.Connection[Any]

_DIALECT = pg_dialect.dialect()
_compiled: dict[TextClause, Compiled] = {}
_row_types: dict[tuple[str, ...], type] = {}


def _psycopg3() -> Any:
    """psycopg 3's module if this process imported it, else None."""
    return sys.modules.get("psycopg")


def is_dbapi_connection(conn: Any) -> bool:
    """A psycopg2 or psycopg 3 connection (not SQLAlchemy's)."""
    if isinstance(conn, psycopg2.extensions.connection):
        return True
    psycopg = _psycopg3()
    return psycopg is not None and isinstance(conn, psycopg.Connection)


def not_a_connection(conn: Any) -> TypeError:
    """The one line for a `conn=` of a kind skiplock cannot write through."""
    kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
    hint = (" (an async connection cannot join a blocking call)"
            if "async" in kind.lower() else "")
    return TypeError(f"conn must be a SQLAlchemy Connection or Session, a psycopg2 connection, "
                     f"a psycopg 3 connection or Django's connection, not {kind}{hint}")


def _row_type(names: tuple[str, ...]) -> type:
    """A named tuple for these columns (made once per column list), with SQLAlchemy's
    `_mapping` so that code that reads a Row by name reads it too."""
    found = _row_types.get(names)
    if found is None:
        base = namedtuple("Row", names, rename=True)  # type: ignore[misc]

        def mapping(self: tuple[Any, ...]) -> Mapping[str, Any]:
            return dict(zip(names, self, strict=True))

        found = _row_types[names] = type("Row", (base,), {"__slots__": (),
                                                          "_mapping": property(mapping)})
    return found


class Rows:
    """What a statement answered, with the part of SQLAlchemy's result the queue reads."""

    __slots__ = ("_names", "_rows", "rowcount", "returns_rows")

    def __init__(self, names: tuple[str, ...], rows: list[Any], rowcount: int) -> None:
        self._names = names
        self._rows = rows
        self.rowcount = rowcount
        self.returns_rows = bool(names)

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any | None:
        return self._rows[0] if self._rows else None


class BorrowedConnection:
    """The one method the queue's statements use (`execute`), on a connection the caller owns."""

    __slots__ = ("raw", "_error_base", "_client_cursor")

    def __init__(self, raw: DBAPIConnection) -> None:
        self.raw = raw
        if isinstance(raw, psycopg2.extensions.connection):
            self._error_base: type[Exception] = psycopg2.Error
            self._client_cursor: Any = None
        else:
            psycopg = _psycopg3()
            self._error_base = psycopg.Error
            self._client_cursor = psycopg.ClientCursor

    def execute(self, statement: TextClause, params: Mapping[str, Any] | None = None) -> Rows:
        query, values = client_bound(statement, params)
        try:
            cur = self._cursor()
            try:
                cur.execute(query, values)
                if self._client_cursor is not None:
                    while cur.nextset():  # on to the last statement's result
                        pass
                if cur.description is None:
                    return Rows((), [], cur.rowcount)
                return rows_of(cur.description, cur.fetchall(), cur.rowcount)
            finally:
                cur.close()
        except self._error_base as exc:
            raise as_sqlalchemy_error(exc, query, values, self._error_base) from exc

    def _cursor(self) -> Any:
        raw: Any = self.raw
        if self._client_cursor is None:
            return raw.cursor(cursor_factory=psycopg2.extensions.cursor)
        return self._client_cursor(raw, row_factory=_psycopg3().rows.tuple_row)


def django_driver_connection(conn: Any) -> Any | None:
    """The driver connection under Django's connection object (`django.db.connection`,
    `connections[alias]`), opened if it was not; None for anything else.

    The driver connection is in the transaction Django's `atomic()` opened (Django
    turns its autocommit off and begins lazily, as the driver does), and in
    autocommit outside one: a job written through it commits with the block, or
    at once, as the ORM's own writes do.
    """
    # Only if the application imported Django; `django.db.connection` is a proxy that
    # hands every attribute on to the wrapper of its alias.
    base = sys.modules.get("django.db.backends.base.base")
    proxy = sys.modules.get("django.utils.connection")
    if base is None or not (isinstance(conn, base.BaseDatabaseWrapper) or (
            proxy is not None and isinstance(conn, proxy.ConnectionProxy))):
        return None
    if conn.vendor != "postgresql":
        raise TypeError(f"skiplock needs PostgreSQL: Django's database {conn.alias!r} is "
                        f"{conn.vendor} ({conn.settings_dict.get('ENGINE')})")
    conn.ensure_connection()
    return conn.connection


def client_bound(statement: TextClause,
                 params: Mapping[str, Any] | None) -> tuple[str, Any]:
    """`statement` as a query string to bind on the client (`%(name)s`), compiled once,
    and its parameters."""
    compiled = _compiled.get(statement)
    if compiled is None:
        compiled = _compiled[statement] = statement.compile(dialect=_DIALECT)
    return compiled.string, compiled.construct_params(dict(params or {}))


def rows_of(description: Any, fetched: list[Any], rowcount: int) -> Rows:
    """A cursor's answer as named tuples, read by position (whatever its row factory)."""
    names = tuple(d[0] for d in description)
    row = _row_type(names)
    return Rows(names, [row(*r) for r in fetched], rowcount)


def as_sqlalchemy_error(exc: Exception, query: str, values: Any,
                        base: type[Exception]) -> sa_exc.StatementError:
    """A driver's error as SQLAlchemy's class for it (IntegrityError, ...), as an
    engine would raise it."""
    return sa_exc.DBAPIError.instance(query, values, exc, base)


def borrow(conn: Any) -> BorrowedConnection:
    """`conn` (a caller's psycopg2 or psycopg 3 connection, or Django's connection object)
    ready for the queue's statements; TypeError, in one line, for anything else."""
    if isinstance(conn, BorrowedConnection):
        return conn
    if is_dbapi_connection(conn):
        return BorrowedConnection(conn)
    driver = django_driver_connection(conn)
    if driver is not None and is_dbapi_connection(driver):
        return BorrowedConnection(driver)
    raise not_a_connection(conn)
