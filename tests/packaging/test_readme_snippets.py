"""The README's "Using it from an application" snippets that run in-process, against the test database."""

from __future__ import annotations

import psycopg2
import pytest

import skiplock
from skiplock.queue_core.urls import libpq_dsn
from tests.packaging.snippets import snippet
from tests.queue_core.helpers import sql


def test_enqueue_in_a_sqlalchemy_session_commits_with_the_session(database_url):
    scope = {"DATABASE_URL": database_url}
    exec(snippet("enqueue-session"), scope)
    [(job_type, user_id, key)] = sql('SELECT type, "userId", "idempotencyKey" FROM "WorkerJob" '
                                     "WHERE id = :id", id=scope["job_id"])
    assert (job_type, user_id, key) == ("SEND_EMAIL", "u42", "welcome:u42")


def test_enqueue_on_a_plain_psycopg2_connection_commits_with_it(database_url):
    scope = {"LIBPQ_DSN": libpq_dsn(database_url)}
    exec(snippet("enqueue-psycopg2"), scope)
    assert sql('SELECT "userId" FROM "WorkerJob" WHERE id = :id', id=scope["job_id"]) == [("u43",)]


def test_a_rolled_back_psycopg2_transaction_leaves_no_job(database_url):
    conn = psycopg2.connect(libpq_dsn(database_url))
    try:
        job_id = skiplock.enqueue("SEND_EMAIL", {"to": "x@example.com"}, conn=conn,
                                  idempotency_key="rolled-back")
        conn.rollback()
    finally:
        conn.close()
    assert sql('SELECT id FROM "WorkerJob" WHERE id = :id', id=job_id) == []


def test_an_existing_key_on_a_psycopg2_connection_returns_the_existing_job(database_url):
    first = skiplock.enqueue("SEND_EMAIL", {"to": "x@example.com"}, idempotency_key="once")
    with psycopg2.connect(libpq_dsn(database_url)) as conn:
        again = skiplock.enqueue_many([{"type": "SEND_EMAIL", "payload": {"to": "x"},
                                        "idempotency_key": "once"},
                                       {"type": "SEND_EMAIL", "payload": {"to": "y"}}], conn=conn)
    conn.close()
    assert again[0] == first and again[1] != first


def test_a_psycopg2_error_keeps_the_callers_transaction_the_callers(database_url):
    conn = psycopg2.connect(libpq_dsn(database_url))
    try:
        with pytest.raises(skiplock.SkiplockError):
            skiplock.enqueue("", {}, conn=conn)  # refused before any statement
        assert conn.status == psycopg2.extensions.STATUS_READY
    finally:
        conn.close()
