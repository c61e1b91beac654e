"""An insert wakes idle workers: skiplock's statements send the NOTIFY themselves, at
their commit and never for a rollback, and the table's trigger sends it only for
producers that insert rows themselves (migration 0011)."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator

import psycopg2
import psycopg2.extensions
import pytest
from alembic import command
from sqlalchemy import text

from skiplock import queue_core as q
from skiplock.queue_core.database import db, direct, migrate
from skiplock.queue_core.database.scratch import scratch_database
from skiplock.queue_core.database.urls import database_url, libpq_dsn
from skiplock.queue_core.sql import NOTIFY_CHANNEL

MARK = "skiplock_test_mark"


class Listener:
    """A session that LISTENs as an idle worker does, and counts what reaches it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg2.connect(libpq_dsn(url))
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f"LISTEN {NOTIFY_CHANNEL}; LISTEN {MARK}")

    def wakes_until_mark(self, timeout: float = 10.0) -> int:
        """The wake-ups received before a marker NOTIFY sent now from another session.

        Notifications arrive in commit order, so the marker's arrival proves that
        anything committed before it has arrived too: no fixed sleep."""
        other = psycopg2.connect(libpq_dsn(self.url))
        try:
            other.autocommit = True
            with other.cursor() as cur:
                cur.execute(f"NOTIFY {MARK}")
        finally:
            other.close()
        wakes = 0
        deadline = time.monotonic() + timeout
        while True:
            self.conn.poll()
            while self.conn.notifies:
                note = self.conn.notifies.pop(0)
                if note.channel == MARK:
                    return wakes
                wakes += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the marker notification never arrived")
            select.select([self.conn], [], [], left)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture()
def trigger_calls() -> Iterator[Callable[[], int]]:
    """A database of its own whose trigger function also counts its calls."""
    with scratch_database("skiplock_wake") as url:
        admin = psycopg2.connect(libpq_dsn(url))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("CREATE TABLE trigger_calls (at timestamptz DEFAULT now())")
            cur.execute("""
                CREATE OR REPLACE FUNCTION skiplock_notify_jobs() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO trigger_calls DEFAULT VALUES;
                    PERFORM pg_notify('skiplock_jobs', '');
                    RETURN NULL;
                END $$""")

        def calls() -> int:
            with admin.cursor() as cur:
                cur.execute("SELECT count(*) FROM trigger_calls")
                return int(cur.fetchone()[0])

        try:
            yield calls
        finally:
            admin.close()
            direct.close()


def _kept() -> None:
    q.enqueue("X", {"n": 1})


def _kept_keyed() -> None:
    q.enqueue("X", {"n": 1}, idempotency_key="wake-1")


def _kept_delayed() -> None:
    q.enqueue("X", {"n": 1}, delay=30)


def _batch() -> None:
    q.enqueue_many([{"type": "X", "payload": {"n": n}} for n in range(3)])


def _batch_keyed() -> None:
    q.enqueue_many([{"type": "X", "payload": {"n": n}, "idempotency_key": f"wake-b{n}"}
                    for n in range(3)])


AUTOCOMMIT: dict[str, Callable[[], None]] = {
    "enqueue": _kept, "enqueue with a key": _kept_keyed, "enqueue with a delay": _kept_delayed,
    "enqueue_many": _batch, "enqueue_many with keys": _batch_keyed,
}


@pytest.mark.parametrize("how", list(AUTOCOMMIT))
def test_an_enqueue_that_commits_by_itself_wakes_once_without_the_trigger(
        how: str, trigger_calls: Callable[[], int]) -> None:
    listening = Listener(database_url())
    try:
        AUTOCOMMIT[how]()
        assert listening.wakes_until_mark() == 1
        assert trigger_calls() == 0
    finally:
        listening.close()


def _in_sqlalchemy(rollback: bool, during: Callable[[], int]) -> int:
    conn = db.get_engine().connect()
    try:
        tx = conn.begin()
        q.enqueue("X", {}, conn=conn)
        q.enqueue_many([{"type": "X", "payload": {}, "idempotency_key": "wake-t"}], conn=conn)
        before = during()
        tx.rollback() if rollback else tx.commit()
    finally:
        conn.close()
    return before


def _in_dbapi(rollback: bool, during: Callable[[], int]) -> int:
    raw = psycopg2.connect(libpq_dsn(database_url()))
    try:
        q.enqueue("X", {}, conn=raw)
        q.enqueue("X", {}, idempotency_key="wake-d", conn=raw)
        before = during()
        raw.rollback() if rollback else raw.commit()
    finally:
        raw.close()
    return before


@pytest.mark.parametrize("inside", [_in_sqlalchemy, _in_dbapi], ids=["sqlalchemy", "dbapi"])
@pytest.mark.parametrize("rollback", [False, True], ids=["commit", "rollback"])
def test_an_enqueue_in_the_callers_transaction_wakes_at_its_commit_only(
        inside: Callable[[bool, Callable[[], int]], int], rollback: bool,
        trigger_calls: Callable[[], int]) -> None:
    listening = Listener(database_url())
    try:
        before_commit = inside(rollback, listening.wakes_until_mark)
        assert before_commit == 0
        # Two enqueues in one transaction: PostgreSQL folds identical notifications.
        assert listening.wakes_until_mark() == (0 if rollback else 1)
        assert trigger_calls() == 0
    finally:
        listening.close()


PRISMA_CREATE = """
INSERT INTO "public"."WorkerJob" ("id","type","payload","status","priority","availableAt",
  "attempts","maxAttempts","createdAt")
VALUES (%s, CAST(%s::text AS "public"."JobType"), %s, CAST(%s::text AS "public"."JobStatus"),
  0, now(), 0, 3, now())
RETURNING "public"."WorkerJob"."id"
"""


def test_a_row_inserted_by_another_producer_wakes_through_the_trigger(
        trigger_calls: Callable[[], int]) -> None:
    listening = Listener(database_url())
    producer = psycopg2.connect(libpq_dsn(database_url()))
    try:
        with producer, producer.cursor() as cur:  # the seed's service, through Prisma
            cur.execute(PRISMA_CREATE, ("prisma-1", "INTERPRET_EVENT", '{"eventId": "e"}',
                                        "PENDING"))
        assert listening.wakes_until_mark() == 1
        assert trigger_calls() == 1
        with producer, producer.cursor() as cur:  # and one that was rolled back
            cur.execute(PRISMA_CREATE, ("prisma-2", "INTERPRET_EVENT", "{}", "PENDING"))
            producer.rollback()
        assert listening.wakes_until_mark() == 0
    finally:
        producer.close()
        listening.close()


def test_the_downgrade_puts_back_the_trigger_that_fires_for_every_insert(
        trigger_calls: Callable[[], int]) -> None:
    url = database_url()
    config = migrate.alembic_config(url)
    command.downgrade(config, "0005_features")
    # Today's enqueue also writes a column of a later revision (0015_trace_context).
    trace_column = 'ALTER TABLE "WorkerJob" {} COLUMN "traceContext" {}'
    with db.get_engine().begin() as conn:
        conn.execute(text(trace_column.format("ADD", "jsonb")))
    direct.close()
    listening = Listener(url)
    try:
        q.enqueue("X", {})  # the statement's NOTIFY and the trigger's fold into one
        assert listening.wakes_until_mark() == 1
        assert trigger_calls() == 1
        with db.get_engine().begin() as conn:
            conn.execute(text(trace_column.format("DROP", "")))
        command.upgrade(config, "skiplock@head")
        q.enqueue("X", {})
        assert listening.wakes_until_mark() == 1
        assert trigger_calls() == 1
    finally:
        listening.close()

