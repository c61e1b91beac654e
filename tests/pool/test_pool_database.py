"""The pool and its database: a restart under load, two pools sharing one queue,
and the embedding API (`pool.run`) with its observers."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from skiplock import pool
from skiplock.handlers import JobResult, register_handler, unregister_handler
from skiplock.pool.observer import ChildInfo, NullObserver, PoolSnapshot
from skiplock.queue_core.config import load_settings
from tests.pool.conftest import _TABLES, Jobs, Pool, wait_for


@pytest.fixture
def private_cluster() -> Iterator[tuple[object, str]]:
    """A throwaway PostgreSQL of our own, which the test may restart (never the machine's)."""
    from skiplock.queue_core.database import migrate
    from skiplock.queue_core.database.embedded import EmbeddedCluster, find_bindir

    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries to run a private cluster with")
    base = Path(tempfile.mkdtemp(prefix="skiplock-pg-", dir="/tmp"))
    base.chmod(0o755)  # the cluster runs as an unprivileged user when we are root
    cluster = EmbeddedCluster(base)
    try:
        url = cluster.ensure_running()
        migrate.upgrade(url)
        engine = create_engine(url)
        with engine.begin() as conn:
            for statement in _TABLES.split(";"):
                if statement.strip():
                    conn.execute(text(statement))
        engine.dispose()
        yield cluster, url
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(120)
def test_the_pool_rides_out_a_postgresql_restart_and_loses_nothing(
    start_pool: Callable[..., Pool], private_cluster: tuple[object, str]
) -> None:
    cluster, url = private_cluster
    engine = create_engine(url)
    jobs = Jobs(engine)
    try:
        pool_ = start_pool("--concurrency", "2", url=url)
        children = pool_.wait_children(2)
        # On its last attempt, and running when the server goes away: an outage
        # alone must not dead-letter it (queue_core/accounting.py).
        last_try = jobs.enqueue("TEST_SLEEP", {"first_seconds": 3, "seconds": 0.05},
                                max_attempts=1, priority=9)
        ids = [jobs.enqueue("TEST_RECORD", {"seconds": 0.05}) for _ in range(80)]
        wait_for(lambda: jobs.statuses().get("COMPLETED", 0) >= 10, 20, "the pool to get going")
        assert jobs.get(last_try)["status"] == "PROCESSING"
        engine.dispose()
        cluster.stop()  # type: ignore[attr-defined]
        time.sleep(2)  # the outage itself: the pool must notice, back off and wait
        cluster.ensure_running()  # type: ignore[attr-defined]

        def finished() -> bool:
            jobs.hurry()  # a handler that failed on the lost connection retries now
            return jobs.all_done(81)

        wait_for(finished, 60, "every job completed after the restart", interval=0.3)
        assert jobs.runs() == {job_id: 1 for job_id in [*ids, last_try]}
        row = jobs.get(last_try)
        assert (row["attempts"], row["interruptions"]) == (1, 1)
        assert pool_.proc.poll() is None
        log = pool_.log()
        assert "database unavailable" in log and "database back after" in log
        # One line per fault and process, not one per retry.
        assert log.count("database unavailable") <= 2 * (1 + len(children) + 2)
        pool_.send(signal.SIGTERM)
        assert pool_.wait_exit(15) == 0
    finally:
        engine.dispose()


@pytest.mark.timeout(60)
def test_two_pools_on_one_database_never_run_a_job_twice(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    first = start_pool("--concurrency", "2")
    second = start_pool("--concurrency", "2")
    pids = set(first.wait_children(2)) | set(second.wait_children(2))
    ids = [jobs.enqueue("TEST_RECORD", {"seconds": 0.01}) for _ in range(200)]
    wait_for(lambda: jobs.all_done(200), 40, "200 jobs completed")
    assert jobs.runs() == {job_id: 1 for job_id in ids}
    served = Counter(row["pid"] for row in jobs.run_rows())
    assert set(served) <= pids
    assert set(served) & set(first.children()) and set(served) & set(second.children())


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.ticks: list[PoolSnapshot] = []

    def on_start(self, snapshot: PoolSnapshot) -> None:
        self.events.append(("start", snapshot.state))

    def on_tick(self, snapshot: PoolSnapshot) -> None:
        self.ticks.append(snapshot)

    def on_job_started(self, child: ChildInfo, job_id: str, job_type: str, attempt: int) -> None:
        self.events.append(("job_started", job_type))

    def on_job_finished(self, child: ChildInfo, job_id: str, job_type: str, outcome: str,
                        duration_s: float) -> None:
        self.events.append(("job_finished", job_type, outcome))

    def on_child_exit(self, child: ChildInfo, cause: str) -> None:
        self.events.append(("child_exit", cause))

    def on_stop(self, snapshot: PoolSnapshot) -> None:
        self.events.append(("stop", snapshot.state))


@pytest.mark.timeout(60)
def test_pool_run_embeds_the_master_sees_handlers_registered_before_it_and_reports(
    database_url: str, jobs: Jobs
) -> None:
    register_handler("TEST_INLINE", lambda payload, job_id: JobResult(True, data=payload))
    try:
        ids = [jobs.enqueue("TEST_INLINE", {"n": n}) for n in range(5)]
        recorder = Recorder()
        settings = load_settings(database_url=database_url, concurrency=2, heartbeat_s=0.5,
                                 poll_max_s=0.5)
        deadline = time.monotonic() + 30
        code = pool.run(settings, observers=[recorder],
                        until=lambda: jobs.all_done(5) or time.monotonic() > deadline)
        assert code == 0
        assert jobs.all_done(5)
        assert all(jobs.get(i)["result"] == {"n": n} for n, i in enumerate(ids))
        events = Counter(recorder.events)
        assert events[("start", "running")] == 1
        assert events[("job_started", "TEST_INLINE")] == 5
        assert events[("job_finished", "TEST_INLINE", "completed")] == 5
        assert events[("child_exit", "stopped")] == 2
        assert recorder.events[-1] == ("stop", "draining")
        assert recorder.ticks and recorder.ticks[0].concurrency == 2
    finally:
        unregister_handler("TEST_INLINE")


@pytest.mark.timeout(60)
def test_observers_hear_why_each_child_ended_and_how_each_job_did(
    database_url: str, jobs: Jobs
) -> None:
    def slow(payload: dict[str, object], job_id: str) -> JobResult:
        time.sleep(30)
        return JobResult(True)

    def crash(payload: dict[str, object], job_id: str) -> JobResult:
        os._exit(9)

    register_handler("TEST_OBS_SLOW", slow, timeout_s=0.5)
    register_handler("TEST_OBS_CRASH", crash)
    register_handler("TEST_OBS_OK", lambda payload, job_id: JobResult(True))
    try:
        ids = [jobs.enqueue(t, {}, max_attempts=1)
               for t in ("TEST_OBS_SLOW", "TEST_OBS_CRASH", "TEST_OBS_OK", "TEST_OBS_OK")]
        recorder = Recorder()
        settings = load_settings(database_url=database_url, concurrency=2, heartbeat_s=0.5,
                                 poll_max_s=0.5, max_jobs_per_child=1)
        deadline = time.monotonic() + 30

        def settled() -> bool:
            done = all(jobs.get(i)["status"] in ("COMPLETED", "DEAD_LETTER") for i in ids)
            return done or time.monotonic() > deadline

        assert pool.run(settings, observers=[recorder], until=settled) == 0
        finished = {e[1:] for e in recorder.events if e[0] == "job_finished"}
        assert finished == {("TEST_OBS_SLOW", "dead_lettered"), ("TEST_OBS_CRASH", "dead_lettered"),
                            ("TEST_OBS_OK", "completed")}
        causes = {e[1] for e in recorder.events if e[0] == "child_exit"}
        assert {"killed_timeout", "crashed", "recycled", "stopped"} <= causes
    finally:
        for job_type in ("TEST_OBS_SLOW", "TEST_OBS_CRASH", "TEST_OBS_OK"):
            unregister_handler(job_type)
