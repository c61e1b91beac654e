"""`enqueue()` without `conn` runs on the process's own autocommit connection
(queue_core/direct.py): kept between calls, replaced when its session was
terminated, never shared across a fork or between threads, errors as through
the engine, and a prepared statement that falls back when it is missing."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from skiplock import queue_core as q
from skiplock.queue_core import db, direct
from skiplock.queue_core.bounds import bounded
from skiplock.queue_core.errors import DatabaseUnavailable, InvalidJob
from skiplock.queue_core.faults import Fault, classify
from tests.queue_core.helpers import count, row
from tests.support import free_port


def kept_pid() -> int:
    kept = direct.acquire()
    assert kept is not None
    try:
        return int(kept.execute(text("SELECT pg_backend_pid() AS pid"))[0].pid)
    finally:
        direct.release(kept)


@pytest.fixture(autouse=True)
def fresh_connection() -> Iterator[None]:
    direct.close()
    yield
    direct.close()


def test_enqueues_share_one_connection_that_stays_in_autocommit() -> None:
    first = q.enqueue("X", {"n": 1})
    pid = kept_pid()
    second = q.enqueue("X", {"n": 2}, priority=3, delay=0.5, user_id=None)
    assert kept_pid() == pid
    assert row(first).payload == {"n": 1} and row(second).priority == 3
    # Each insert committed by itself: another session sees both at once.
    assert count() == 2
    admin = create_engine(db.get_engine().url)
    try:
        with admin.connect() as other:
            state = other.execute(text("SELECT state FROM pg_stat_activity WHERE pid = :p"),
                                  {"p": pid}).scalar_one()
        assert state == "idle"
    finally:
        admin.dispose()


def test_a_terminated_session_is_replaced_before_the_next_enqueue() -> None:
    q.enqueue("X", {})
    victim = kept_pid()
    with db.get_engine().connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": victim})
    job_id = q.enqueue("X", {"after": True})  # no error: the dead session is noticed first
    assert row(job_id).payload == {"after": True}
    assert kept_pid() != victim


def test_a_connection_lost_mid_statement_is_one_clear_error_and_then_replaced() -> None:
    q.enqueue("X", {})
    kept = direct.acquire()
    assert kept is not None
    try:
        # The session ends while it runs our statement: the statement fails.
        with pytest.raises(Exception) as caught:
            kept.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert classify(caught.value) in (Fault.ADMIN_SHUTDOWN, Fault.CONNECTION_LOST)
    finally:
        direct.release(kept)
    job_id = q.enqueue("X", {"n": 3})
    assert row(job_id).payload == {"n": 3}


def test_a_forked_child_gets_its_own_connection_and_leaves_the_parents_alone() -> None:
    q.enqueue("X", {"who": "parent"})
    parent = kept_pid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            q.enqueue("X", {"who": "child"})
            os.write(write, str(kept_pid()).encode())
            direct.close()  # closes the child's own connection only
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    child_pid = int(os.read(read, 100) or 0)
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid not in (0, parent)
    # The parent's session was neither used nor closed by the child.
    q.enqueue("X", {"who": "parent again"})
    assert kept_pid() == parent
    assert count() == 3


def test_a_thread_finding_the_connection_busy_goes_through_the_engine() -> None:
    q.enqueue("X", {})
    kept = direct.acquire()
    assert kept is not None
    try:
        assert direct.acquire() is None
        ids: list[str] = []
        worker = threading.Thread(target=lambda: ids.append(q.enqueue("X", {"thread": 1})))
        worker.start()
        worker.join(10)
        assert len(ids) == 1 and row(ids[0]).payload == {"thread": 1}
    finally:
        direct.release(kept)


def test_errors_read_as_through_the_engine(database_url: str) -> None:
    with pytest.raises(InvalidJob, match="the user does not exist"):
        q.enqueue("X", {}, user_id="nobody")
    with pytest.raises(InvalidJob, match="the user does not exist"):
        q.enqueue("X", {}, user_id="nobody", idempotency_key="k")
    assert count() == 0
    secret = "s3cr3t-pw"
    nobody = make_url(database_url).set(host="127.0.0.1", port=free_port(), password=secret)
    try:
        db.get_engine(nobody.render_as_string(hide_password=False))
        with pytest.raises(DatabaseUnavailable) as caught:
            q.enqueue("X", {})
        assert classify(caught.value) == Fault.REFUSED
        assert secret not in str(caught.value) and "\n" not in str(caught.value)
    finally:
        db.reset_engine()
        db.get_engine(database_url)
    assert count() == 0
    q.enqueue("X", {})  # the configured database again, on a new connection
    assert count() == 1


def test_enqueue_inside_a_time_bound() -> None:
    with bounded(5.0):
        job_id = q.enqueue("X", {"bounded": True})
        keyed = q.enqueue("X", {}, idempotency_key="bounded")
    assert row(job_id).payload == {"bounded": True} and row(keyed).idempotencyKey == "bounded"


def test_a_missing_prepared_statement_falls_back_to_the_plain_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(direct, "_prepare_off", False)
    q.enqueue("X", {})
    kept = direct.acquire()
    assert kept is not None
    try:
        # As behind PgBouncer in transaction mode: the statement was prepared on
        # another server connection than the next one reaches.
        kept.execute(text("DEALLOCATE ALL"))
    finally:
        direct.release(kept)
    job_id = q.enqueue("X", {"n": "plain"})
    assert row(job_id).payload == {"n": "plain"}
    assert direct._prepare_off
    q.enqueue("X", {"n": "plain again"}, concurrency_key="ck", concurrency=1)
    assert count() == 3
