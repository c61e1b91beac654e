"""`enqueue()` without `conn` runs on the process's own autocommit connection
(queue_core/database/direct.py): kept between calls, replaced when its session was
terminated, never shared across a fork or between threads, errors as through
the engine, and a prepared statement that falls back when it is missing. A batch
without keys takes its own statement, and the cheaper payload checks refuse what
they refused before."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from skiplock import queue_core as q
from skiplock.queue_core.database import db, direct
from skiplock.queue_core.database.bounds import bounded
from skiplock.queue_core.database.faults import Fault, classify
from skiplock.queue_core.enqueue import MAX_PAYLOAD_DEPTH
from skiplock.queue_core.errors import DatabaseUnavailable, InvalidJob, InvalidPayload
from tests.queue_core.helpers import count, row, sql
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


def test_errors_read_as_through_the_engine(database_url: str, user_foreign_key: None) -> None:
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


def test_a_batch_without_keys_writes_every_column_in_input_order() -> None:
    hostile = 'ty"pe\\with {braces}, commas and "quotes"'
    jobs = [
        {"type": "A", "payload": {"i": 0, "s": 'q"uo\\te {x}'}},
        {"type": hostile, "payload": {"i": 1}, "priority": -4, "delay": 60,
         "max_attempts": 7, "user_id": "u1"},
        {"type": "A", "payload": {"i": 2}, "concurrency_key": 'k"1', "concurrency": 1},
        {"type": "A", "payload": {"i": 3}, "concurrency_key": 'k"1', "concurrency": 1},
        {"type": "NULL", "payload": {"i": 4, "NULL": None}},
    ]
    ids = q.enqueue_many(jobs)
    assert len(set(ids)) == 5 and count() == 5
    rows = [row(i) for i in ids]
    assert [r.payload["i"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0].payload["s"] == 'q"uo\\te {x}' and rows[4].type == "NULL"
    assert (rows[1].type, rows[1].priority, rows[1].maxAttempts, rows[1].userId) == (
        hostile, -4, 7, "u1")
    assert 59 <= (rows[1].availableAt - rows[1].createdAt).total_seconds() <= 61
    assert rows[0].userId is None and rows[0].concurrencyKey is None and rows[0].heldBack is None
    # The per-row trigger still runs for keyed rows: one slot taken, one held back.
    assert (rows[2].heldBack, rows[3].heldBack) == (None, True)
    assert sql('SELECT active, "limit" FROM "WorkerConcurrencyKey" WHERE key = :k',
               k='k"1')[0] == (1, 1)


def test_a_batch_with_and_without_keys_mixed_still_returns_existing_ids() -> None:
    existing = q.enqueue("X", {}, idempotency_key="old")
    ids = q.enqueue_many([{"type": "X", "payload": {"n": 1}},
                          {"type": "X", "payload": {}, "idempotency_key": "old"}])
    assert ids[1] == existing and row(ids[0]).payload == {"n": 1} and count() == 2


def test_a_payload_that_contains_itself_is_refused_as_too_deep() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(InvalidPayload, match="deeper than"):
        q.enqueue("X", loop)
    looped_list: list[object] = []
    looped_list.append(looped_list)
    with pytest.raises(InvalidPayload, match="deeper than"):
        q.enqueue_many([{"type": "X", "payload": {"l": looped_list}}])
    # Too deep and not JSON at once: the depth is what is said, as before.
    deep: dict[str, object] = {"x": {1, 2}}
    for _ in range(MAX_PAYLOAD_DEPTH + 1):
        deep = {"a": deep}
    with pytest.raises(InvalidPayload, match="deeper than"):
        q.enqueue("X", deep)
    # Many brackets, none deep: written.
    wide = {"items": [[{"a": []}] for _ in range(200)], "text": "[[[{{{" * 50}
    assert row(q.enqueue("X", wide)).payload == wide
    assert count() == 1
