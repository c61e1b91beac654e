"""Async connections for `skiplock.aenqueue` and its kin: the caller's, joined in its
open transaction, or skiplock's own.

What `conn=` of an async call takes:

- psycopg 3's `AsyncConnection`: the queue's statements bound on the client
  (an `AsyncClientCursor`), as `borrowed.py` runs them on a blocking psycopg
  connection: the same query strings, rows read by position, errors as
  SQLAlchemy's classes; the caller's commit and rollback stay its own;
- SQLAlchemy's `AsyncConnection` or `AsyncSession` on psycopg 3
  (`postgresql+psycopg://`): SQLAlchemy's `execute`, one statement per query
  (psycopg binds on the server), as `db.ServerBound` does for a blocking one.

Anything else is refused with one TypeError line before anything is sent: a
blocking connection (the async call would block the event loop on it), and
SQLAlchemy on asyncpg, whose server-side typing refuses the array literals the
queue binds as text.

Without `conn=` an async call opens a psycopg 3 `AsyncConnection` of its own
(autocommit; the URL and libpq parameters of skiplock's engine, so the same
database as the blocking calls) and closes it when done. Nothing runs on a
thread: every wait is the event loop's (psycopg's async I/O, SQLAlchemy's
greenlet bridge). A host name in the URL is resolved by the loop's
`getaddrinfo`, as every asyncio client's is: asyncio runs that lookup in the
loop's default executor; an address (127.0.0.1) or a socket directory needs none.

psycopg 3 is imported only here, and only when an async call opens a
connection of its own: the blocking API never imports it (borrowed.py says why).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from sqlalchemy import TextClause, text

from skiplock.queue_core import sql
from skiplock.queue_core.database.borrowed import Rows, as_sqlalchemy_error, client_bound, rows_of
from skiplock.queue_core.database.db import connect_args, get_engine, translate_errors
from skiplock.queue_core.database.urls import libpq_dsn

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# What `conn=` of an async call takes.
AsyncJoinable: TypeAlias = "psycopg.AsyncConnection[Any] | AsyncConnection | AsyncSession"


class AsyncExecutor(Protocol):
    """What the async calls run the queue's statements on."""

    async def execute(self, statement: TextClause,
                      params: Mapping[str, Any] | None = None) -> Any: ...


def _psycopg() -> Any:
    """psycopg 3 (imported on first use: the blocking API never needs it)."""
    return sys.modules.get("psycopg") or importlib.import_module("psycopg")


class AsyncBorrowed:
    """A psycopg 3 `AsyncConnection`: the caller's, or skiplock's own."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    async def execute(self, statement: TextClause,
                      params: Mapping[str, Any] | None = None) -> Rows:
        psycopg = _psycopg()
        query, values = client_bound(statement, params)
        try:
            async with psycopg.AsyncClientCursor(self.raw,
                                                 row_factory=psycopg.rows.tuple_row) as cur:
                await cur.execute(query, values)
                while cur.nextset():  # on to the last statement's result (borrowed.py)
                    pass
                if cur.description is None:
                    return Rows((), [], cur.rowcount)
                return rows_of(cur.description, await cur.fetchall(), cur.rowcount)
        except psycopg.Error as exc:
            raise as_sqlalchemy_error(exc, query, values, psycopg.Error) from exc


class AsyncServerBound:
    """A SQLAlchemy `AsyncConnection` on psycopg 3: one statement per query."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, statement: TextClause,
                      params: Mapping[str, Any] | None = None) -> Any:
        *before, last = sql.one_at_a_time(statement)
        for query in before:
            await self.conn.execute(query)
        return await self.conn.execute(last, dict(params or {}))


def not_an_async_connection(conn: Any) -> TypeError:
    """The one line for a `conn=` an async call cannot write through."""
    kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
    return TypeError(
        "conn of an async call must be a psycopg 3 AsyncConnection, or a SQLAlchemy "
        f"AsyncConnection or AsyncSession on psycopg (postgresql+psycopg://), not {kind}"
        " (a blocking connection goes to the blocking calls: skiplock.enqueue, ...)")


async def _joined(conn: Any) -> AsyncExecutor:
    if isinstance(conn, (AsyncBorrowed, AsyncServerBound)):
        return conn
    # Only what the application imported can be what it passes.
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(conn, psycopg.AsyncConnection):
        return AsyncBorrowed(conn)
    sa_async = sys.modules.get("sqlalchemy.ext.asyncio")
    if sa_async is not None:
        if isinstance(conn, sa_async.AsyncSession):
            _check_driver(conn.get_bind().dialect.driver, conn)
            # The session's connection, in its transaction (begun if need be, as the
            # session's own execute would).
            return AsyncServerBound(await conn.connection())
        if isinstance(conn, sa_async.AsyncConnection):
            _check_driver(conn.dialect.driver, conn)
            return AsyncServerBound(conn)
    raise not_an_async_connection(conn)


def _check_driver(driver: str, conn: Any) -> None:
    if driver != "psycopg":
        raise TypeError(
            f"conn of an async call must be on psycopg 3 (postgresql+psycopg://), not on "
            f"{driver} (a SQLAlchemy {type(conn).__qualname__})")


async def open_own() -> Any:
    """A psycopg 3 `AsyncConnection` of skiplock's own, autocommit, to the database the
    blocking calls use (raises the driver's error as SQLAlchemy's class)."""
    psycopg = _psycopg()
    url = get_engine().url.render_as_string(hide_password=False)
    try:
        return await psycopg.AsyncConnection.connect(libpq_dsn(url), autocommit=True,
                                                     **connect_args())
    except psycopg.Error as exc:
        raise as_sqlalchemy_error(exc, "connect", None, psycopg.Error) from exc


async def close(raw: Any) -> None:
    """Close one of our own connections; a broken one is closed all the same."""
    with contextlib.suppress(_psycopg().Error, OSError):
        await raw.close()


_BEGIN, _COMMIT, _ROLLBACK = text("BEGIN"), text("COMMIT"), text("ROLLBACK")


@contextlib.asynccontextmanager
async def ajoin(conn: AsyncJoinable | None, *,
                transaction: bool = False) -> AsyncIterator[AsyncExecutor]:
    """Where an async call runs its statements: `conn`'s open transaction, else a
    connection of its own (autocommit), closed on exit. With `transaction`, what the
    block runs is one transaction, committed when it ends normally, also on a connection
    of our own or a caller's psycopg connection in autocommit. Errors come out as
    `db.connect` lets them: a lost or refused connection as DatabaseUnavailable."""
    with translate_errors():
        own = None
        if conn is not None:
            executor = await _joined(conn)
            # A SQLAlchemy connection begins a transaction by itself; a psycopg one in
            # autocommit would commit each statement alone.
            transaction = (transaction and isinstance(executor, AsyncBorrowed)
                           and bool(executor.raw.autocommit))
        else:
            own = await open_own()
            executor = AsyncBorrowed(own)
        try:
            if not transaction:
                yield executor
                return
            # Sent as statements, so that the COMMIT's error comes out as any statement's.
            await executor.execute(_BEGIN)
            try:
                yield executor
            except BaseException:
                if own is None:  # the caller's connection stays usable; ours is closed
                    with contextlib.suppress(Exception):
                        await executor.execute(_ROLLBACK)
                raise
            await executor.execute(_COMMIT)
        finally:
            if own is not None:
                await close(own)
