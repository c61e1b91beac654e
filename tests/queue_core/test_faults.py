"""Database errors, made for real, classified in one place; bad connections are not kept."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from skiplock.queue_core.database import db
from skiplock.queue_core.database.bounds import bounded
from skiplock.queue_core.database.faults import Fault, classify
from skiplock.queue_core.errors import DatabaseUnavailable
from tests.support import free_port


def backend_pid(conn: object) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())  # type: ignore[attr-defined]


@pytest.fixture
def other_session(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def test_a_lock_held_elsewhere_is_a_lock_timeout_and_the_connection_is_kept(
    other_session: Engine,
) -> None:
    db.execute(text("CREATE TABLE IF NOT EXISTS fault_probe (id int PRIMARY KEY)"))
    db.execute(text("INSERT INTO fault_probe VALUES (1) ON CONFLICT DO NOTHING"))
    with other_session.connect() as holder:
        transaction = holder.begin()
        holder.execute(text("SELECT 1 FROM fault_probe WHERE id = 1 FOR UPDATE"))
        with db.connect(autocommit=True) as conn:
            before = backend_pid(conn)
            began = time.monotonic()
            with pytest.raises(OperationalError) as caught, bounded(0.6):
                conn.execute(text("UPDATE fault_probe SET id = 1 WHERE id = 1"))
            assert time.monotonic() - began < 0.6
            assert classify(caught.value) == Fault.LOCK_TIMEOUT
            assert not caught.value.connection_invalidated
            assert backend_pid(conn) == before  # the same session goes on
        transaction.rollback()


def test_a_slow_statement_is_a_statement_timeout() -> None:
    with pytest.raises(DatabaseUnavailable) as caught, bounded(0.3), \
            db.connect(autocommit=True) as conn:
        conn.execute(text("SELECT pg_sleep(2)"))
    assert classify(caught.value) == Fault.STATEMENT_TIMEOUT
    assert Fault.STATEMENT_TIMEOUT.server_answered


def test_a_server_that_never_answers_is_cut_off_at_the_bound_and_discarded(
    database_url: str,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never answers
    url = make_url(database_url).set(host="127.0.0.1", port=silent.getsockname()[1])
    try:
        db.get_engine(url.render_as_string(hide_password=False))
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as caught, bounded(0.5), db.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert time.monotonic() - began < 1.5
        assert classify(caught.value) == Fault.CLIENT_TIMEOUT
        assert Fault.CLIENT_TIMEOUT.discards_connection
    finally:
        silent.close()
        db.reset_engine()
        db.get_engine(database_url)


def test_no_time_left_sends_nothing() -> None:
    with db.connect(autocommit=True) as conn:
        with pytest.raises(DatabaseUnavailable) as caught, bounded(0.0):
            conn.execute(text("SELECT 1"))
        assert classify(caught.value) == Fault.NO_TIME_LEFT
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_a_connection_that_answers_read_only_is_never_reused() -> None:
    db.execute(text("CREATE TABLE IF NOT EXISTS fault_probe (id int PRIMARY KEY)"))
    with db.connect(autocommit=True) as conn:
        # As a session opened while the database was read-only (after a failover).
        conn.execute(text("SET default_transaction_read_only = on"))
        stale = backend_pid(conn)
    with pytest.raises(DatabaseUnavailable) as caught:
        db.execute(text("INSERT INTO fault_probe VALUES (2) ON CONFLICT DO NOTHING"))
    assert classify(caught.value) == Fault.READ_ONLY
    with db.connect() as conn:
        assert backend_pid(conn) != stale
        conn.execute(text("INSERT INTO fault_probe VALUES (2) ON CONFLICT DO NOTHING"))


def test_a_terminated_session_is_an_admin_shutdown_and_discarded(other_session: Engine) -> None:
    with db.connect(autocommit=True) as conn:
        victim = backend_pid(conn)
    with other_session.begin() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
    with pytest.raises(DatabaseUnavailable) as caught:
        db.execute(text("SELECT 1"))
    assert classify(caught.value) in (Fault.ADMIN_SHUTDOWN, Fault.CONNECTION_LOST)
    assert classify(caught.value).discards_connection  # type: ignore[union-attr]
    with db.connect() as conn:
        assert backend_pid(conn) != victim


def test_refused_and_rejected_connections(database_url: str) -> None:
    nobody = make_url(database_url).set(host="127.0.0.1", port=free_port())
    missing = make_url(database_url).set(database="skiplock_no_such_database")
    try:
        for url, fault in ((nobody, Fault.REFUSED), (missing, Fault.REJECTED)):
            db.get_engine(url.render_as_string(hide_password=False))
            with pytest.raises(DatabaseUnavailable) as caught:
                db.execute(text("SELECT 1"))
            assert classify(caught.value) == fault
    finally:
        db.reset_engine()
        db.get_engine(database_url)
    assert classify(ValueError("not a database error")) is None
