from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from skiplock import queue_core as q
from skiplock.queue_core.database import db
from skiplock.queue_core.errors import InvalidJob, InvalidPayload
from tests.queue_core.helpers import count, row


def test_enqueue_writes_a_pending_row_with_the_seed_columns():
    job_id = q.enqueue("INTERPRET_EVENT", {"eventId": "evt_1"}, priority=5, user_id="u1",
                       max_attempts=4)
    r = row(job_id)
    assert r.st == "PENDING"
    assert r.type == "INTERPRET_EVENT"
    assert r.payload == {"eventId": "evt_1"}
    assert (r.priority, r.attempts, r.maxAttempts, r.userId) == (5, 0, 4, "u1")
    assert r.lockedBy is None and r.lockedAt is None
    assert r.availableAt <= r.createdAt + timedelta(milliseconds=50)


def test_delay_schedules_the_job_later_by_the_database_clock():
    job_id = q.enqueue("X", {}, delay=timedelta(minutes=5))
    r = row(job_id)
    delta = (r.availableAt - r.createdAt).total_seconds()
    assert 299 <= delta <= 301
    assert q.claim("w") == []


def test_same_idempotency_key_returns_the_existing_job():
    first = q.enqueue("X", {"n": 1}, idempotency_key="k1")
    second = q.enqueue("X", {"n": 2}, idempotency_key="k1")
    assert first == second
    assert count() == 1
    assert row(first).payload == {"n": 1}


def _enqueue_same_key(_: int) -> str:
    db.reset_engine()
    return q.enqueue("X", {}, idempotency_key="contended")


def test_concurrent_enqueues_of_one_key_give_one_row_and_one_id():
    # Forked, not spawned: the processes start together, where spawned ones came a
    # second apart, each importing everything first (db.reset_engine leaves this
    # process's connections to it).
    with multiprocessing.get_context("fork").Pool(8) as pool:
        ids = pool.map(_enqueue_same_key, range(64))
    assert len(set(ids)) == 1
    assert count('"idempotencyKey" = :k', k="contended") == 1


def test_enqueue_many_returns_ids_in_input_order_with_existing_ids_for_known_keys():
    existing = q.enqueue("X", {}, idempotency_key="old")
    ids = q.enqueue_many([
        {"type": "A", "payload": {"i": 0}},
        {"type": "B", "payload": {"i": 1}, "idempotency_key": "old"},
        {"type": "C", "payload": {"i": 2}, "idempotency_key": "new", "priority": 3},
        {"type": "D", "payload": {"i": 3}, "idempotency_key": "new"},
    ])
    assert ids[1] == existing
    assert ids[2] == ids[3]
    assert len(set(ids)) == 3
    assert [row(i).type for i in ids] == ["A", "X", "C", "C"]
    assert row(ids[2]).priority == 3


def test_enqueue_joins_the_callers_transaction():
    engine = db.get_engine()
    with engine.connect() as conn:
        trans = conn.begin()
        job_id = q.enqueue("X", {}, conn=conn)
        assert count() == 0  # not visible outside before commit
        trans.rollback()
    assert row(job_id) is None
    with Session(engine) as session, session.begin():
        kept = q.enqueue("X", {}, conn=session)
    assert row(kept) is not None


def test_typed_helpers_use_the_seed_keys():
    a = q.enqueue_interpret_event({"eventId": "e9"})
    assert row(a).idempotencyKey == "interpret:e9"
    assert q.enqueue_interpret_event({"eventId": "e9"}) == a
    b = q.enqueue_detect_patterns({"userId": "u", "triggerEventId": "e9",
                                   "interpretationId": "i"})
    assert (row(b).idempotencyKey, row(b).userId) == ("patterns:e9", "u")
    c = q.enqueue_generate_insights({"userId": "u", "triggerType": "new_event", "eventId": "e9"})
    assert row(c).idempotencyKey == "insights:e9:new_event"
    d = q.enqueue_generate_review({"userId": "u", "type": "DAILY", "periodKey": "2026-11-28",
                                   "timezone": "Europe/Paris"})
    assert row(d).idempotencyKey == "review:u:DAILY:2026-11-28"
    e = q.enqueue_generate_tomorrow_plan({"userId": "u", "reviewId": "r",
                                          "targetDate": "2026-11-29"})
    assert row(e).idempotencyKey == "tomorrow:u:2026-11-29"
    f = q.enqueue_suggest_uom_update({"userId": "u", "dailyPlanId": "p"})
    assert row(f).idempotencyKey == "uom:p"
    g = q.enqueue_generate_insights({"userId": "u", "triggerType": "pattern_created",
                                     "patternId": "pat"})
    assert row(g).idempotencyKey == "insights:u:pattern_created:pat"


HOSTILE = "Robert'); DROP TABLE \"WorkerJob\";-- SELECT * FROM pg_user; \\' \" $$ 🙂"


def test_hostile_strings_are_stored_verbatim():
    job_id = q.enqueue(HOSTILE[:200], {"text": HOSTILE, HOSTILE: [HOSTILE]},
                       idempotency_key=HOSTILE, user_id=HOSTILE)
    r = row(job_id)
    assert r.type == HOSTILE[:200]
    assert r.payload == {"text": HOSTILE, HOSTILE: [HOSTILE]}
    assert r.idempotencyKey == HOSTILE and r.userId == HOSTILE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"job_type": "", "payload": {}}, "job type must be a non-empty string"),
        ({"job_type": "T" * 201, "payload": {}}, "limit is 200"),
        ({"job_type": "X", "payload": [1, 2]}, "must be a JSON object, not an array"),
        ({"job_type": "X", "payload": "text"}, "must be a JSON object, not a string"),
        ({"job_type": "X", "payload": {"big": "x" * (1024 * 1024)}}, "the limit is 1048576"),
        ({"job_type": "X", "payload": {"n": float("nan")}}, "is not JSON"),
        ({"job_type": "X", "payload": {"o": object()}}, "is not JSON"),
        ({"job_type": "X", "payload": {"s": "a\x00b"}}, "NUL"),
        ({"job_type": "X", "payload": {}, "max_attempts": -1}, "between 1 and 1000"),
        ({"job_type": "X", "payload": {}, "max_attempts": 0}, "between 1 and 1000"),
        ({"job_type": "X", "payload": {}, "priority": "high"}, "priority must be an integer"),
        ({"job_type": "X", "payload": {}, "delay": -5}, "delay must be between"),
        ({"job_type": "X", "payload": {}, "idempotency_key": ""}, "idempotency key"),
        ({"job_type": "INTERPRET_EVENT", "payload": {}}, "missing field 'eventId'"),
        ({"job_type": "INTERPRET_EVENT", "payload": {"eventId": 7}}, "'eventId'"),
        ({"job_type": "GENERATE_REVIEW", "payload": {"userId": "u", "type": "YEARLY",
                                                     "periodKey": "2026", "timezone": "UTC"}},
         "must be one of DAILY, WEEKLY, MONTHLY"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(kwargs, message):
    job_type = kwargs.pop("job_type")
    payload = kwargs.pop("payload")
    with pytest.raises(InvalidJob, match=message.replace("(", r"\(")):
        q.enqueue(job_type, payload, **kwargs)
    assert count() == 0


def test_a_bad_job_in_a_batch_writes_none_of_the_batch():
    with pytest.raises(InvalidPayload, match="job|payload"):
        q.enqueue_many([{"type": "X", "payload": {}}, {"type": "X", "payload": 3}])
    assert count() == 0
