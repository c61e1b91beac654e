"""An application's plain psycopg2 connection, for enqueueing inside its open transaction.

SQLAlchemy cannot join a DBAPI connection's transaction without taking over
its commit and rollback (closing a SQLAlchemy Connection rolls back what it
began). So the queue's statements, which are SQLAlchemy `text()` constants,
are compiled for psycopg2 and run on a cursor of the caller's connection: the
job rows are written in whatever transaction it has open and exist only if
the caller commits.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect
from sqlalchemy.sql.elements import TextClause

_DIALECT = pg_dialect.dialect()


def is_dbapi_connection(conn: Any) -> bool:
    return isinstance(conn, psycopg2.extensions.connection)


class BorrowedConnection:
    """The one method the queue's writes use (`execute`), on a connection the caller owns."""

    def __init__(self, raw: psycopg2.extensions.connection) -> None:
        self.raw = raw

    def execute(self, statement: TextClause, params: dict[str, Any] | None = None) -> list[Any]:
        compiled = statement.compile(dialect=_DIALECT)
        values = compiled.construct_params(params or {})
        with self.raw.cursor() as cur:
            try:
                cur.execute(compiled.string, values)
            except psycopg2.Error as exc:
                # The same exception classes as through SQLAlchemy (IntegrityError, ...).
                raise sa_exc.DBAPIError.instance(compiled.string, values, exc,
                                                 psycopg2.Error) from exc
            if cur.description is None:
                return []
            row = namedtuple("row", [d.name for d in cur.description])  # type: ignore[misc]
            return [row(*values) for values in cur.fetchall()]
