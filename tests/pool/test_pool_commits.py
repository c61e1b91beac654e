"""A busy child commits once per job: the claim of its next job rides in the
transaction that completes the last one (pool/child.py, claim_with_completion)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text

from tests.pool.conftest import Jobs, Pool, wait_for

JOBS = 300


def _pool_sessions(jobs: Jobs) -> int:
    """Sessions of skiplock processes other than this test's own."""
    with jobs.engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'skiplock[%' AND application_name <> :own"
        ), {"own": f"skiplock[{os.getpid()}]"}).scalar_one())


def _commits(jobs: Jobs) -> int:
    """Committed transactions of this database so far (a read that commits nothing)."""
    with jobs.engine.connect() as conn:  # closed with a rollback: not counted itself
        return int(conn.execute(text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )).scalar_one())


@pytest.mark.timeout(60)
def test_a_busy_child_commits_about_once_per_job(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    from skiplock.queue_core import enqueue_many

    with jobs.engine.begin() as conn:
        enqueue_many([{"type": "BENCH_NOOP", "payload": {}}] * JOBS, conn=conn)
    before = _commits(jobs)
    # A long heartbeat and recovery interval keep the master's own statements (the
    # heartbeats, the process table, recoveries) to a handful during the run.
    pool = start_pool("--concurrency", "1", "--batch-size", "1", "--heartbeat", "5",
                      "--recovery-interval", "60", "--poll-max", "2",
                      handlers="bench.handlers")
    wait_for(lambda: jobs.all_done(JOBS), 40, f"{JOBS} no-op jobs completed", interval=0.2)
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(15) == 0  # its sessions end, and with them their statistics flush
    # The test's own reads roll back. A session's counts show by the time it has
    # ended: wait for the pool's sessions to go, then for the count to settle.
    wait_for(lambda: not _pool_sessions(jobs), 10, "the pool's sessions to end")
    counts = [_commits(jobs)]
    while len(counts) < 2 or counts[-1] != counts[-2]:
        time.sleep(0.5)
        counts.append(_commits(jobs))
    commits = counts[-1] - before
    assert commits >= JOBS  # every completion is a commit of its own
    # Two commits per job (a claim, then the job's transaction) would be 2 * JOBS; one
    # per job plus the start, the idle polls at the end and the master's statements
    # stays well under 1.5 * JOBS.
    assert commits < 1.5 * JOBS, f"{commits} commits for {JOBS} jobs"
    log = pool.log()
    assert "Traceback" not in log
