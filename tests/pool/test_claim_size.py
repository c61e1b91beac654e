"""The claim size adapts to the backlog and to how long jobs run (pool/claim_size.py),
and a group commits before its outcomes wait too long (pool/group_commit.py)."""

from __future__ import annotations

import time

from skiplock.pool.claim_size import MAX_ADAPTIVE, TARGET_S, ClaimSize, Durations
from skiplock.pool.group_commit import Group, Outcome
from skiplock.queue_core.jobs import Job


def test_short_jobs_from_a_deep_queue_are_claimed_in_full_bites_after_one_full_claim() -> None:
    durations = Durations()
    size = ClaimSize(0, durations)
    assert size.limit() == 1  # nothing known yet: one at a time
    durations.observe("T", 0.0001)
    sizes = []
    for _ in range(3):
        sizes.append(size.limit())
        size.after_claim(size.limit())  # full: the queue is deep
    assert sizes == [1, MAX_ADAPTIVE, MAX_ADAPTIVE]  # the claim's share keeps children even
    durations.observe("T", TARGET_S / 20)
    durations.observe("T", TARGET_S / 20)
    size.after_claim(size.limit())
    assert 20 < size.limit() < MAX_ADAPTIVE  # the target, in jobs of this length
    size.after_claim(3)  # the queue ran dry
    assert size.limit() == 3
    size.after_claim(0)
    assert size.limit() == 1


def test_a_burst_into_an_idle_child_is_claimed_in_full_bites_after_its_first_job() -> None:
    durations = Durations()
    size = ClaimSize(0, durations)
    size.after_claim(size.limit())  # the first claim, one job, counted before it ran
    durations.observe("T", TARGET_S / 15)
    assert size.limit() == 15  # not one job again: the target, with what is known now
    assert size.limit(2) == 2  # but no more than the child runs before it recycles


def test_long_jobs_are_claimed_one_at_a_time_so_no_child_sits_on_work() -> None:
    durations = Durations()
    size = ClaimSize(0, durations)
    durations.observe("SLOW", 2.0)
    for _ in range(5):
        size.after_claim(size.limit())
    assert size.limit() == 1


def test_a_fixed_batch_size_keeps_the_earlier_rule() -> None:
    size = ClaimSize(4, Durations())
    assert size.limit() == 1
    size.after_claim(1)
    assert size.limit() == 4
    size.after_claim(2)
    assert size.limit() == 1


def test_a_claim_is_judged_by_what_it_asked_for_even_when_the_cap_moved_since() -> None:
    durations = Durations()
    size = ClaimSize(0, durations)
    fast, slow = TARGET_S / 9.5, TARGET_S / 8.5  # caps of 9 and 8 jobs
    durations.observe("T", fast)
    for _ in range(5):
        size.after_claim(size.limit())
    assert size.limit() == 9
    for _ in range(20):
        durations.observe("T", slow)  # slower for a while
    assert size.limit() == 8
    # The claim of 8 came back full; its jobs ran faster again, so by the time it
    # is counted the cap is 9 once more. It was still a full claim: the queue is deep.
    for _ in range(20):
        durations.observe("T", fast)
    size.after_claim(8)
    assert size.last_full and size.limit() == 9


def test_only_a_full_bite_of_more_than_one_says_the_queue_is_deep() -> None:
    durations = Durations()
    size = ClaimSize(0, durations)
    durations.observe("T", 0.001)
    size.after_claim(size.limit())  # asked 1, got 1: an idle pool's pick-up looks so
    assert not size.last_full
    size.after_claim(size.limit())  # asked 2, got 2
    assert size.last_full
    size.after_claim(size.limit() - 1)
    assert not size.last_full


def _outcome(ended_at: float) -> Outcome:
    job = Job(id="j", type="T", payload={}, status="PROCESSING", priority=0, available_at=None,
              attempts=1, max_attempts=3, last_error=None, locked_at=None, locked_by="w",
              idempotency_key=None, user_id=None, created_at=None, started_at=None,
              completed_at=None)
    return Outcome(job, 0.001, ended_at)


def test_a_group_commits_when_its_oldest_outcome_is_due_or_before_a_long_job() -> None:
    group = Group(delay_s=0.5)
    assert not group.due(0.001)  # nothing waits
    group.add(_outcome(time.monotonic()))
    assert not group.due(0.001)  # young, and the next job is short
    assert group.due(None)  # a job of a type not seen yet may run long
    assert group.due(5.0)
    group.outcomes[0].ended_at -= 1.0
    assert group.due(0.001)  # old enough
    assert Group(delay_s=0).due(0.001) is False  # empty
    zero = Group(delay_s=0)
    zero.add(_outcome(time.monotonic()))
    assert zero.due(0.001)  # a delay of 0: one commit per job


def test_the_master_calls_only_observers_that_do_something_in_a_hook() -> None:
    from skiplock.pool.observer import NullObserver, listens

    class Counting(NullObserver):
        def on_job_finished(self, *args: object) -> None:
            pass

    assert listens(Counting(), "on_job_finished")
    assert not listens(Counting(), "on_job_started")  # inherited: empty
    assert not listens(NullObserver(), "on_tick")
