"""Dependencies under a real pool: a dependent starts after its last parent's commit,
never before, and within one claim of it (the commit wakes the idle children)."""

from __future__ import annotations

from datetime import timedelta

import skiplock
from tests.support import wait_for


def test_a_dependent_starts_after_its_parents_and_within_one_claim_of_the_last(
        start_pool, jobs) -> None:
    # A long poll: only the wake-up of the last parent's commit can start the dependent
    # promptly, not an idle child's next look at the queue.
    start_pool("--concurrency", "2", "--poll-max", "5")
    rounds = []
    for n in (1, 6):
        parents = [jobs.enqueue("TEST_RECORD", {"seconds": 0.05 * (i + 1)}) for i in range(n)]
        child = jobs.enqueue("TEST_RECORD", {}, depends_on=parents)
        wait_for(lambda c=child: jobs.get(c)["status"] == "COMPLETED", timeout=30,
                 what="the dependent to complete")
        ended = max(jobs.get(p)["completedAt"] for p in parents)
        started = jobs.get(child)["startedAt"]
        assert started >= ended, "the dependent started before its last parent ended"
        rounds.append(started - ended)
    # An idle child polls every 5 s here: well under that, the NOTIFY woke it.
    assert max(rounds) < timedelta(seconds=2), rounds


def test_a_batch_under_a_pool_calls_back_once(start_pool, jobs) -> None:
    start_pool("--concurrency", "2")
    with skiplock.batch(on_complete=("TEST_RECORD", {"callback": True})) as b:
        for i in range(40):
            skiplock.enqueue("TEST_RECORD", {"i": i})
    wait_for(lambda: jobs.get(b.callback_id)["status"] == "COMPLETED", timeout=60,
             what="the batch's callback")
    runs = jobs.run_rows()
    callback_runs = [r for r in runs if r["job_id"] == b.callback_id]
    assert len(callback_runs) == 1
    member_ends = [r["finished"] for r in runs if r["job_id"] in b.members]
    assert len(member_ends) == 40
    assert callback_runs[0]["started"] >= max(member_ends)
    assert jobs.get(b.callback_id)["payload"]["batch"]["completed"] == 40
