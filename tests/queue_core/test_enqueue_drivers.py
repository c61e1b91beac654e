"""`conn=` on every kind of application connection: SQLAlchemy sessions and connections on
psycopg2 and on psycopg 3, and plain psycopg2 and psycopg 3 connections.

Each kind must join the caller's open transaction exactly as the others do: the
job exists only if the caller commits, a refused job leaves the transaction
usable, an existing key gives the existing job, a REPEATABLE READ snapshot that
misses a concurrent key says to retry, the workers are woken at the commit, and
errors are the same classes whatever the driver.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.rows
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from skiplock import queue_core as q
from skiplock.queue_core import sql as queue_sql
from skiplock.queue_core.database.urls import libpq_dsn
from tests.queue_core.helpers import age_lock, count, row
from tests.queue_core.helpers import sql as run_sql
from tests.support import wait_for


@dataclass
class Caller:
    """An application's open transaction on one kind of connection."""

    conn: Any  # what the application hands to `conn=`
    execute: Callable[[str], Any]  # the application's own statement, in its transaction
    commit: Callable[[], None]
    rollback: Callable[[], None]
    close: Callable[[], None]


Opener = Callable[..., Caller]


def _session(engine: Engine, isolation: str | None) -> Caller:
    bind = engine.execution_options(isolation_level=isolation) if isolation else engine
    session = Session(bind)
    return Caller(session, lambda s: session.execute(text(s)), session.commit,
                  session.rollback, session.close)


def _connection(engine: Engine, isolation: str | None) -> Caller:
    conn = engine.connect()
    if isolation:
        conn = conn.execution_options(isolation_level=isolation)
    return Caller(conn, lambda s: conn.execute(text(s)), conn.commit, conn.rollback, conn.close)


def _psycopg2(dsn: str, isolation: str | None) -> Caller:
    conn = psycopg2.connect(dsn, cursor_factory=psycopg2.extras.RealDictCursor)
    if isolation:
        conn.set_session(isolation_level=isolation)

    def execute(statement: str) -> None:
        with conn.cursor() as cur:
            cur.execute(statement)
    return Caller(conn, execute, conn.commit, conn.rollback, conn.close)


def _psycopg(dsn: str, isolation: str | None) -> Caller:
    conn = psycopg.connect(dsn, row_factory=psycopg.rows.dict_row)
    if isolation:
        conn.isolation_level = psycopg.IsolationLevel[isolation.replace(" ", "_")]
    return Caller(conn, conn.execute, conn.commit, conn.rollback, conn.close)


KINDS = ["session-psycopg2", "session-psycopg", "connection-psycopg2", "connection-psycopg",
         "psycopg2", "psycopg"]


@pytest.fixture(scope="module")
def engines(database_url: str) -> Iterator[dict[str, Engine]]:
    """The application's own engines, apart from skiplock's, one per driver."""
    url = make_url(database_url)
    made = {driver: create_engine(url.set(drivername=f"postgresql+{driver}"))
            for driver in ("psycopg2", "psycopg")}
    yield made
    for engine in made.values():
        engine.dispose()


@pytest.fixture(scope="module", autouse=True)
def signup_table(database_url: str) -> Iterator[None]:
    """A table of the application's, written in the same transaction as the enqueue."""
    run_sql("CREATE TABLE IF NOT EXISTS signup (id text PRIMARY KEY)")
    yield
    run_sql("DROP TABLE IF EXISTS signup")


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, engines: dict[str, Engine],
           database_url: str) -> Iterator[Opener]:
    kind: str = request.param
    dsn = libpq_dsn(database_url)
    opened: list[Caller] = []

    def open_(isolation: str | None = None) -> Caller:
        shape, _, driver = kind.partition("-")
        if shape == "session":
            caller = _session(engines[driver], isolation)
        elif shape == "connection":
            caller = _connection(engines[driver], isolation)
        elif kind == "psycopg2":
            caller = _psycopg2(dsn, isolation)
        else:
            caller = _psycopg(dsn, isolation)
        opened.append(caller)
        return caller

    yield open_
    for caller in opened:
        caller.close()


def signups() -> list[str]:
    return [r[0] for r in run_sql("SELECT id FROM signup ORDER BY id")]


def test_the_job_exists_once_the_callers_transaction_commits(opener: Opener) -> None:
    app = opener()
    app.execute("INSERT INTO signup (id) VALUES ('ada')")
    one = q.enqueue("SEND_EMAIL", {"to": "ada"}, conn=app.conn, idempotency_key="welcome:ada")
    many = q.enqueue_many([{"type": "SEND_EMAIL", "payload": {"n": n}, "sequence": "ada"}
                           for n in range(3)], conn=app.conn)  # a sequence: its own statement
    assert row(one) is None and count() == 0  # not before the caller commits
    app.commit()
    assert row(one).st == "PENDING" and row(one).idempotencyKey == "welcome:ada"
    assert [row(i).payload for i in many] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [(row(i).sequenceNo, row(i).heldBack) for i in many] == [(1, None), (2, False),
                                                                   (3, False)]
    assert signups() == ["ada"]


def test_a_rolled_back_transaction_leaves_no_job(opener: Opener) -> None:
    app = opener()
    app.execute("INSERT INTO signup (id) VALUES ('grace')")
    one = q.enqueue("SEND_EMAIL", {"to": "grace"}, conn=app.conn, idempotency_key="k")
    q.enqueue_many([{"type": "SEND_EMAIL", "payload": {}}] * 2, conn=app.conn)
    app.rollback()
    assert row(one) is None and count() == 0 and signups() == []


def test_an_existing_key_gives_the_existing_job(opener: Opener) -> None:
    first = q.enqueue("SEND_EMAIL", {"to": "x"}, idempotency_key="once")
    app = opener()
    again = q.enqueue("SEND_EMAIL", {"to": "x"}, conn=app.conn, idempotency_key="once")
    both = q.enqueue_many([{"type": "SEND_EMAIL", "payload": {}, "idempotency_key": "once"},
                           {"type": "SEND_EMAIL", "payload": {}, "idempotency_key": "new"}],
                          conn=app.conn)
    app.commit()
    assert again == first and both[0] == first and both[1] != first
    assert count() == 2


def test_a_refused_job_leaves_the_callers_transaction_usable(opener: Opener) -> None:
    app = opener()
    app.execute("INSERT INTO signup (id) VALUES ('hedy')")
    with pytest.raises(q.InvalidJob):
        q.enqueue("", {}, conn=app.conn)
    with pytest.raises(q.InvalidPayload):
        q.enqueue_many([{"type": "OK", "payload": {}}, {"type": "X", "payload": {"n": "\x00"}}],
                       conn=app.conn)
    app.execute("INSERT INTO signup (id) VALUES ('hedy2')")
    kept = q.enqueue("SEND_EMAIL", {"to": "hedy"}, conn=app.conn)
    app.commit()
    assert signups() == ["hedy", "hedy2"]
    assert count() == 1 and row(kept) is not None  # the refused batch wrote nothing


def test_a_database_error_is_sqlalchemys_class_on_every_driver(opener: Opener) -> None:
    app = opener()
    with pytest.raises((sa_exc.DBAPIError, psycopg2.Error, psycopg.Error)):  # the caller's own
        app.execute("SELECT 1 / 0")
    # The transaction is aborted: the enqueue says so as SQLAlchemy's InternalError
    # (25P02), not as the driver's own class nor as an outage.
    with pytest.raises(sa_exc.InternalError, match="current transaction is aborted"):
        q.enqueue("SEND_EMAIL", {}, conn=app.conn)
    app.rollback()
    assert count() == 0


def test_a_concurrent_key_missed_by_a_repeatable_read_snapshot_says_to_retry(
        opener: Opener) -> None:
    app = opener("REPEATABLE READ")
    app.execute("SELECT 1")  # the snapshot is taken here
    other = q.enqueue("SEND_EMAIL", {}, idempotency_key="k1")  # committed after it
    with pytest.raises(q.TransactionConflict) as caught:
        q.enqueue("SEND_EMAIL", {}, idempotency_key="k1", conn=app.conn)
    assert caught.value.sqlstate == "40001"
    assert "key k1" in str(caught.value) and "retry the transaction" in str(caught.value)
    app.rollback()
    # Retried, the transaction finds the job the other one enqueued.
    assert q.enqueue("SEND_EMAIL", {}, idempotency_key="k1", conn=app.conn) == other
    app.commit()
    assert count() == 1


def test_workers_are_woken_when_the_caller_commits(opener: Opener, database_url: str) -> None:
    listener = psycopg2.connect(libpq_dsn(database_url))
    try:
        listener.autocommit = True
        with listener.cursor() as cur:
            cur.execute(f"LISTEN {queue_sql.NOTIFY_CHANNEL}")
        app = opener()
        q.enqueue("SEND_EMAIL", {}, conn=app.conn, idempotency_key="woken")
        listener.poll()
        assert listener.notifies == []  # a NOTIFY goes out at the commit, never before
        app.commit()

        def woken() -> bool:
            listener.poll()
            return any(n.channel == queue_sql.NOTIFY_CHANNEL for n in listener.notifies)
        wait_for(woken, 10, "the NOTIFY of the committed enqueue")
    finally:
        listener.close()


def test_the_other_public_calls_join_the_callers_transaction(opener: Opener) -> None:
    pending = q.enqueue("SEND_EMAIL", {})
    app = opener()
    mine = q.enqueue("SEND_EMAIL", {"mine": True}, conn=app.conn)
    # Reads see the caller's uncommitted work: they run in its transaction.
    job = q.get_job(mine, conn=app.conn)
    assert job is not None and job.payload == {"mine": True}
    assert q.stats(conn=app.conn).pending == 2
    assert q.cancel(pending, by="ops", conn=app.conn).outcome is q.CancelOutcome.CANCELLED
    assert [r.job_id for r in q.cancel_many([mine], by="ops", conn=app.conn)] == [mine]
    app.rollback()
    assert row(pending).st == "PENDING" and row(mine) is None

    claimed = q.claim("w1", limit=5, conn=app.conn)
    assert [j.id for j in claimed] == [pending]
    app.rollback()
    assert row(pending).st == "PENDING"

    assert [r.job_id for r in q.cancel_matching(job_type="SEND_EMAIL", by="ops",
                                                conn=app.conn)] == [pending]
    app.commit()
    assert row(pending).st == "FAILED" and row(pending).cancelledBy == "ops"


def test_a_claimed_jobs_outcome_joins_the_callers_transaction(opener: Opener) -> None:
    for n in range(3):
        q.enqueue("WORK", {"n": n}, max_attempts=1)
    done, failed, released = q.claim("w1", limit=3)
    app = opener()
    assert q.heartbeat([done, failed, released], conn=app.conn) == {done.id, failed.id,
                                                                    released.id}
    assert q.complete(done, {"ok": 1}, conn=app.conn) is True
    assert q.fail(failed, "boom", conn=app.conn) == "DEAD_LETTER"
    assert q.release(released, "shutting down", conn=app.conn) is True
    app.rollback()
    assert {row(j.id).st for j in (done, failed, released)} == {"PROCESSING"}

    q.complete(done, {"ok": 1}, conn=app.conn)
    q.fail(failed, "boom", conn=app.conn)
    q.release(released, "shutting down", conn=app.conn)
    app.commit()
    assert row(done.id).st == "COMPLETED" and row(done.id).result == {"ok": 1}
    assert row(failed.id).st == "DEAD_LETTER" and row(released.id).st == "PENDING"

    assert q.retry_dead([failed.id], conn=app.conn) == [failed.id]
    app.commit()
    assert row(failed.id).st == "PENDING"

    [stuck] = q.claim("w2", limit=1, types=["WORK"])
    age_lock(stuck.id, 3600)
    assert q.recover_stuck(60, conn=app.conn).count == 1
    app.rollback()
    assert row(stuck.id).st == "PROCESSING"


@pytest.mark.parametrize("wrong", ["postgresql://127.0.0.1/app", object()],
                         ids=["a-url", "an-object"])
def test_a_conn_of_another_kind_is_refused_in_one_line(wrong: Any) -> None:
    with pytest.raises(TypeError) as caught:
        q.enqueue("SEND_EMAIL", {}, conn=wrong)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("conn must be a SQLAlchemy Connection or Session, a psycopg2 "
                              "connection, a psycopg 3 connection or Django's connection, not ")
    with pytest.raises(TypeError):
        q.cancel("x", conn=wrong)
    assert count() == 0


def test_a_psycopg_3_database_url_keeps_skiplocks_own_engine_on_psycopg2(
        database_url: str) -> None:
    from skiplock.queue_core import config
    from skiplock.queue_core.database import db

    url = make_url(database_url).set(drivername="postgresql+psycopg")
    saved = os.environ["DATABASE_URL"]
    os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
    config.clear_cache()
    db.reset_engine()
    try:
        assert db.get_engine().dialect.driver == "psycopg2"
        job_id = q.enqueue("SEND_EMAIL", {})  # skiplock's own kept connection
        assert q.get_job(job_id) is not None
    finally:
        os.environ["DATABASE_URL"] = saved
        config.clear_cache()
        db.reset_engine()


def test_a_database_url_of_another_driver_is_refused_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skiplock", "stats"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": "postgresql+asyncpg://app:Sekr1t@127.0.0.1/app"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "names the driver asyncpg" in result.stderr and "Sekr1t" not in result.stderr
