"""Claims from a cursor's segments (queue_core/claim_cursor.py): the claim index's
order across priorities, and rows that became ready behind a position."""

from __future__ import annotations

from datetime import datetime

from skiplock import queue_core as q
from skiplock.queue_core import lifecycle
from skiplock.queue_core.claim_cursor import ClaimCursor
from tests.queue_core.helpers import sql
from tests.support import Clock


def _cursor_on(clock: Clock) -> ClaimCursor:
    """A cursor that turns segments on after two claims from the head, whatever they took."""
    return ClaimCursor(slow_s=0.0, full_every_s=1.0, clock=clock)


def test_claims_from_segments_keep_priority_order_and_see_new_rows_of_every_priority():
    clock = Clock()
    cursor = _cursor_on(clock)
    low = [q.enqueue("A", {"i": i}, priority=0) for i in range(4)]
    mid = [q.enqueue("A", {"i": i}, priority=5) for i in range(4)]
    got = [j.id for j in q.claim("w", limit=1, cursor=cursor)]
    got += [j.id for j in q.claim("w", limit=1, types=["A"], cursor=cursor)]
    assert got == mid[:2] and cursor.on and cursor.segments() is not None
    got = [j.id for j in q.claim("w", limit=3, cursor=cursor)]
    assert got == [mid[2], mid[3], low[0]] and cursor.claims_from_segments == 1
    # Enqueued after the positions: a higher priority than any remembered, one between,
    # one at a remembered priority; each claim still takes the best ready row.
    top = q.enqueue("A", {}, priority=9)
    between = q.enqueue("A", {}, priority=3)
    again = q.enqueue("A", {}, priority=5)
    got = [j.id for j in q.claim("w", limit=2, types=["A"], children=2, cursor=cursor)]
    assert got == [top, again]
    done, claimed = lifecycle.complete_and_claim([], "w", 2, cursor=cursor)
    assert [j.id for j in claimed] == [between, low[1]]
    statement, params = lifecycle.complete_and_claim_statement([], "w", 8, cursor=cursor)
    assert "seg_hi" in params and cursor.claims_from_head == 2
    assert [j.id for j in q.claim("w", limit=8, cursor=cursor)] == low[2:]


def test_a_row_ready_behind_a_position_waits_for_the_next_claim_from_the_head_only():
    clock = Clock()
    cursor = _cursor_on(clock)
    ids = [q.enqueue("A", {"i": i}) for i in range(4)]
    assert len(q.claim("w", limit=1, cursor=cursor)) == len(q.claim("w", limit=1,
                                                                    cursor=cursor)) == 1
    # Committed with an earlier "availableAt" than the position (a late enqueue, a job
    # let in by flow control): the claims from segments start past it.
    behind = q.enqueue("A", {})
    sql("""UPDATE "WorkerJob" SET "availableAt" = now() - interval '1 hour' WHERE id = :id""",
        id=behind)
    assert [j.id for j in q.claim("w", limit=8, cursor=cursor)] == ids[2:]
    assert q.claim("w", limit=8, cursor=cursor) == []
    clock.now += 1.0  # a claim from the head is due
    assert [j.id for j in q.claim("w", limit=8, cursor=cursor)] == [behind]
    assert cursor.claims_from_head == 3


def test_segments_are_used_only_while_claims_from_the_head_are_slow():
    clock = Clock()
    cursor = ClaimCursor(slow_s=0.006, full_every_s=1.0, clock=clock)
    job = type("J", (), {"priority": 0, "available_at": None})()
    cursor.claimed([job], 0.0001, from_head=True)
    assert cursor.segments() is None  # nothing remembered, and fast
    cursor.positions[0] = datetime(2026, 1, 1)
    cursor.claimed([], 0.02, from_head=True)
    assert cursor.segments() is None  # one slow claim may be the machine's hiccup
    cursor.claimed([], 0.02, from_head=True)
    assert cursor.segments() is not None  # two in a row: segments
    clock.now += 1.0
    assert cursor.segments() is None  # ... with a claim from the head every second,
    for _ in range(2):
        cursor.claimed([], 0.001, from_head=True)
        assert cursor.on and cursor.segments() is not None
    cursor.claimed([], 0.001, from_head=True)
    assert not cursor.on and cursor.segments() is None  # fast three times in a row: off


def test_turning_on_warns_once_in_ten_minutes(caplog):
    import logging

    clock = Clock()
    cursor = ClaimCursor(slow_s=0.006, clock=clock)

    def turn_on_then_off() -> None:
        cursor.claimed([], 0.02, from_head=True)
        cursor.claimed([], 0.02, from_head=True)
        for _ in range(3):
            cursor.claimed([], 0.001, from_head=True)

    with caplog.at_level(logging.INFO, logger="skiplock.queue"):
        for _ in range(3):  # a loaded machine: the head crosses 6 ms now and then
            turn_on_then_off()
            clock.now += 60
        clock.now += 600
        turn_on_then_off()
    turned = [r.levelname for r in caplog.records if "remembered positions" in r.message]
    assert turned == ["WARNING", "INFO", "INFO", "WARNING"]
