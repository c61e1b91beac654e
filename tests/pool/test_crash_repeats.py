"""What a child's crash repeats (pool/group_commit.py): the job in flight, and at
most the jobs that finished within `--commit-delay-ms` before it; and every job
that started is counted, so a job still ends within `maxAttempts + 3` runs."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import text

from tests.pool.conftest import Jobs, Pool, alive, wait_for
from tests.pool.test_group_commit import _enqueue_all, _start_grouping_pool

EFFECTS = "tests.pool.effect_handlers"


def _effects(jobs: Jobs) -> Counter[str]:
    with jobs.engine.connect() as conn:
        return Counter(row[0] for row in conn.execute(text(
            "SELECT job_id FROM pool_test_effects")))


@pytest.mark.parametrize("delay", [[], ["--commit-delay-ms", "0"]],
                         ids=["the default commit delay", "a commit per job"])
def test_six_kills_during_400_jobs_repeat_at_most_two_effects_each(
    start_pool: Callable[..., Pool], jobs: Jobs, delay: list[str]
) -> None:
    jobs.execute("CREATE TABLE IF NOT EXISTS pool_test_effects (job_id text NOT NULL, "
                 "pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    jobs.execute("TRUNCATE pool_test_effects")
    pool = start_pool("--concurrency", "2", *delay, handlers=EFFECTS)
    from skiplock.queue_core import enqueue_many

    with jobs.engine.begin() as conn:
        ids = enqueue_many([{"type": "TEST_EFFECT", "payload": {"seconds": 0.02},
                             "max_attempts": 5} for _ in range(400)], conn=conn)
    kills = 0
    for round_ in range(1, 7):
        wait_for(lambda r=round_: sum(_effects(jobs).values()) >= 50 * r, 60,
                 f"{50 * round_} effects")
        victim = pool.wait_children(2)[round_ % 2]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda v=victim: not alive(v), 5, "the child to die")
        kills += 1
    # The killed jobs' retries come at once: what they repeat counts, not their back-off.
    wait_for(lambda: jobs.all_done_hurried(400), 120, "every job completed", interval=0.3)
    effects = _effects(jobs)
    assert set(effects) == set(ids)
    repeated = sum(n - 1 for n in effects.values())
    print(f"{repeated} effects repeated over {kills} kills")  # shown by pytest -rP
    assert repeated <= 2 * kills, (repeated, {k: n for k, n in effects.items() if n > 1})


def test_batch_mates_of_a_crashing_job_are_interrupted_not_given_back_as_never_started(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # Outcomes wait for their batch's end (a delay of a minute): the jobs that ran
    # before the crashing one are lost with the child each time it dies.
    _start_grouping_pool(start_pool, jobs)
    # One attempt: the crashing job dead-letters at its first crash (each crash is
    # a child's respawn with its back-off; one is enough to lose the mates' runs).
    ids = _enqueue_all(jobs, [({}, 1)] * 4 + [({"crash_always": True}, 0)], max_attempts=1)
    crasher, mates = ids[-1], ids[:-1]
    wait_for(lambda: jobs.get(crasher)["status"] == "DEAD_LETTER"
             and jobs.all_done(5), 90, "the crashing job dead-lettered, its mates completed")
    assert jobs.get(crasher)["attempts"] == 1
    reran = 0
    for job_id in mates:
        row = jobs.get(job_id)
        runs = len(jobs.starts(job_id))
        assert runs <= row["maxAttempts"] + 3, (runs, dict(row))
        # Each run lost with the child was an interruption: counted, free three
        # times; never "never started".
        assert (row["interruptions"] or 0) == runs - 1, (runs, dict(row))
        assert row["attempts"] == 1
        if runs > 1:
            reran += 1
            assert "after the job ran, before its completion committed" in row["lastError"]
    assert reran, "no batch-mate ran before the crash: the test proved nothing"


def test_a_job_cancelled_while_its_outcome_waits_for_the_commit_costs_its_mates_nothing(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    from skiplock.queue_core.features.cancel import cancel

    _start_grouping_pool(start_pool, jobs)
    # Four jobs whose outcomes wait in the group while the fifth runs for seconds.
    ids = _enqueue_all(jobs, [({}, 1)] * 4 + [({"sleep": 4}, 0)])
    target, mates = ids[1], ids[:1] + ids[2:]
    wait_for(lambda: jobs.starts(ids[-1]), 15, "the last job to start")
    assert jobs.get(target)["status"] == "PROCESSING"  # ran; its completion waits
    cancel(target, by="ops")
    wait_for(lambda: jobs.get(target)["status"] == "FAILED", 10, "the cancel to land")
    wait_for(lambda: jobs.all_done(5), 20, "the others completed")
    row = jobs.get(target)
    assert "after it ran, before its commit" in row["lastError"], row["lastError"]
    # Nothing of its group was rolled back and run again.
    assert all(len(jobs.starts(job_id)) == 1 for job_id in ids), \
        [len(jobs.starts(job_id)) for job_id in ids]
    assert all(jobs.runs()[job_id] == 1 for job_id in mates)
