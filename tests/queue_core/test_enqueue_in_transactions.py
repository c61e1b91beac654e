"""An enqueue that joins the caller's transaction: dated by its statement, clear on conflict."""

from __future__ import annotations

import threading
import time

import pytest

from skiplock import queue_core as q
from skiplock.queue_core.database import db
from tests.queue_core.helpers import row


def test_a_delayed_enqueue_at_the_end_of_a_long_transaction_counts_from_its_statement():
    early = q.enqueue("X", {})
    with db.get_engine().begin() as conn:
        began = conn.exec_driver_sql("SELECT now()").scalar_one()
        time.sleep(1.0)  # a five-minute job, shortened
        late = q.enqueue("X", {}, delay=60, conn=conn)
    r = row(late)
    assert (r.createdAt - began).total_seconds() >= 1.0
    assert (r.availableAt - r.createdAt).total_seconds() == pytest.approx(60, abs=0.01)
    # Not due yet, and the older job comes first.
    assert [j.id for j in q.claim("w", limit=5)] == [early]


def test_an_enqueue_in_repeatable_read_that_meets_a_concurrent_key_says_to_retry():
    engine = db.get_engine()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.exec_driver_sql("SELECT 1")  # the snapshot is taken here
            other = threading.Thread(target=q.enqueue, args=("X", {}),
                                     kwargs={"idempotency_key": "k1"})
            other.start()
            other.join()
            with pytest.raises(q.TransactionConflict) as caught:
                q.enqueue("X", {}, idempotency_key="k1", conn=conn)
    assert caught.value.sqlstate == "40001"
    assert "key k1" in str(caught.value) and "retry the transaction" in str(caught.value)
    assert "cannot use the database" not in str(caught.value)
    # Retried, the transaction finds the job the other one enqueued.
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            again = q.enqueue("X", {}, idempotency_key="k1", conn=conn)
    assert row(again) is not None
