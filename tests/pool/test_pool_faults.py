"""The pool under the database's own faults: a locked row, a locked table, a server
that hangs or a host cut off from it, a read-only spell, terminated backends.

Each fault is real (a session that holds the lock, a proxy that stops passing
bytes, ALTER DATABASE, pg_terminate_backend); each test asserts what the old
single-statement heartbeat and unbounded loop got wrong (docs/reliability.md).
Most run twice: straight to the server, and through PgBouncer in transaction
mode with `--no-listen` (tests/pool/pgbouncer.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from skiplock.queue_core.database.scratch import run_admin
from tests.pool import pgbouncer
from tests.pool.conftest import Jobs, Pool, alive, wait_for
from tests.pool.proxy import FreezableProxy


class Route:
    """How the pools under test reach the database."""

    def __init__(self, name: str, bouncer: pgbouncer.PgBouncer | None = None) -> None:
        self.name = name
        self.bouncer = bouncer
        self.flags: tuple[str, ...] = ("--no-listen",) if bouncer else ()

    def url(self, database_url: str) -> str:
        return self.bouncer.url(database_url) if self.bouncer else database_url

    @property
    def port(self) -> int:
        return self.bouncer.port if self.bouncer else 5432


@pytest.fixture(scope="session")
def bouncer(database_url: str) -> Iterator[pgbouncer.PgBouncer]:
    with pgbouncer.running(database_url) as running:
        yield running


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request: pytest.FixtureRequest) -> Route:
    if request.param == "direct":
        return Route("direct")
    return Route("pgbouncer", request.getfixturevalue("bouncer"))


def locked_at(jobs: Jobs, job_id: str) -> datetime:
    return jobs.get(job_id)["lockedAt"]


def terminate_pool_backends(engine: Engine) -> int:
    """pg_terminate_backend every connection of a skiplock process but this one."""
    with engine.begin() as conn:
        return len(conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'skiplock[%' "
            "AND application_name <> :me AND pid <> pg_backend_pid()"),
            {"me": f"skiplock[{os.getpid()}]"}).fetchall())


@pytest.fixture
def proxy(route: Route) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy(port=route.port)
    yield proxy
    proxy.close()


@pytest.mark.timeout(90)
def test_a_locked_job_row_holds_up_only_that_jobs_lease(
    start_pool: Callable[..., Pool], jobs: Jobs, pool_engine: Engine, route: Route,
    database_url: str,
) -> None:
    # Stuck timeout 6 s: a lease is fenced 2 s before it could run out, 4 s after
    # its last renewal.
    pool = start_pool("--concurrency", "2", "--stuck-timeout", "6", *route.flags,
                      url=route.url(database_url))
    locked = jobs.enqueue("TEST_SLEEP", {"seconds": 30})
    free = jobs.enqueue("TEST_SLEEP", {"seconds": 6})
    wait_for(lambda: jobs.starts(locked) and jobs.starts(free), 15, "both jobs to start")
    [victim] = jobs.starts(locked)
    with pool_engine.connect() as session:  # an operator's open transaction
        transaction = session.begin()
        session.execute(text('SELECT 1 FROM "WorkerJob" WHERE id = :id FOR UPDATE'),
                        {"id": locked})
        locker = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        before = locked_at(jobs, free)
        # The other job's lease is renewed all the same (one UPDATE of both waited).
        wait_for(lambda: (locked_at(jobs, free) - before).total_seconds() >= 1, 5,
                 "the free job's lease to be renewed while the other row is locked")
        pool.send(signal.SIGTERM)
        pool.wait_log("draining (SIGTERM)", 5)  # the loop is not stuck behind the lock
        # The locked job's lease cannot be renewed: it is stopped before it could run
        # out, while the lock is still held and nobody could have rescued it yet.
        wait_for(lambda: not alive(victim), 10, "the locked job's child to be fenced")
        # It says why: a session holds the row, not a database out of reach.
        assert f"its row is locked by another session (pid {locker})" in pool.log()
        transaction.rollback()
    assert pool.wait_exit(20) == 0
    assert jobs.get(free)["status"] == "COMPLETED"
    row = jobs.get(locked)
    assert (row["status"], row["attempts"]) == ("PENDING", 0)  # back, without an attempt
    assert "lease could not be renewed" in row["lastError"]
    assert f"its row was locked by another session (pid {locker})" in row["lastError"]
    assert jobs.runs() == {free: 1}


@pytest.mark.timeout(90)
def test_a_locked_job_table_does_not_stop_timeouts_signals_or_reaping(
    start_pool: Callable[..., Pool], jobs: Jobs, pool_engine: Engine, route: Route,
    database_url: str,
) -> None:
    pool = start_pool("--concurrency", "1", "--job-timeout", "1", "--stuck-timeout", "30",
                      *route.flags, url=route.url(database_url))
    job_id = jobs.enqueue("TEST_SLEEP", {"seconds": 60}, max_attempts=1)
    wait_for(lambda: jobs.starts(job_id), 15, "the job to start")
    [victim] = jobs.starts(job_id)
    with pool_engine.connect() as session:
        transaction = session.begin()
        session.execute(text('LOCK TABLE "WorkerJob" IN ACCESS EXCLUSIVE MODE'))
        wait_for(lambda: not alive(victim), 10, "the job timeout to be enforced under the lock")
        pool.send(signal.SIGTERM)
        pool.wait_log("draining (SIGTERM)", 5)
        transaction.rollback()
    assert pool.wait_exit(20) == 0
    row = jobs.get(job_id)
    assert row["status"] == "DEAD_LETTER" and row["lastError"].startswith("timed out after 1s")


@pytest.mark.timeout(120)
def test_a_host_cut_off_from_the_database_stops_its_job_before_another_rescues_it(
    start_pool: Callable[..., Pool], jobs: Jobs, pool_engine: Engine, database_url: str,
    proxy: FreezableProxy, route: Route,
) -> None:
    flags = ("--concurrency", "1", "--stuck-timeout", "6", *route.flags)
    cut_off = start_pool(*flags, url=proxy.url(database_url))
    job_id = jobs.enqueue("TEST_SLEEP", {"first_seconds": 60, "seconds": 0.1})
    wait_for(lambda: jobs.starts(job_id), 15, "the job to start on the first host")
    [victim] = jobs.starts(job_id)
    # Reaches the database, and rescues as soon as the lease is stale, not at its next
    # round of recovery (every stuck timeout by default): the gap checked below is
    # as narrow as it can be.
    rescuer = start_pool(*flags, "--recovery-interval", "0.5", url=route.url(database_url))
    rescuer.wait_children(1)
    proxy.freeze()  # the first host's connections hang: no error, no answer
    died_at = wait_for(lambda: not alive(victim) and time.time(), 20,
                       "the cut-off host to stop its job")
    wait_for(lambda: len(jobs.starts(job_id)) == 2, 40, "the other host to rescue the job")
    with pool_engine.connect() as conn:
        rescued_at = conn.execute(text(
            "SELECT extract(epoch FROM max(at)) FROM pool_test_starts WHERE job_id = :j"),
            {"j": job_id}).scalar_one()
    assert died_at < float(rescued_at), "both hosts ran the job at once"
    cut_off.send(signal.SIGTERM)  # still cut off: it gives up on what it owes, and exits
    assert cut_off.wait_exit(20) == 0
    wait_for(lambda: jobs.all_done(1), 20, "the rescued job to complete")
    assert jobs.runs() == {job_id: 1}


def _set_read_only(url: str, on: bool) -> None:
    # From the server's maintenance database: a session of the read-only one could
    # not undo it.
    name = make_url(url).database
    action = "SET default_transaction_read_only = on" if on else \
        "RESET default_transaction_read_only"
    admin = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    run_admin(admin, f'ALTER DATABASE "{name}" {action}')


@pytest.mark.timeout(120)
# Straight to the server only: behind PgBouncer the pooler's own server connections
# opened during the spell stay read-only until it recycles them (server_lifetime);
# after a real failover they break with the old primary (docs/reliability.md).
def test_connections_opened_while_the_database_was_read_only_are_not_kept(
    start_pool: Callable[..., Pool], jobs: Jobs, pool_engine: Engine, database_url: str,
) -> None:
    # A read-only database renews no lease: a long stuck timeout keeps the fence
    # (28 s) out of this test's way.
    pool = start_pool("--concurrency", "2", "--stuck-timeout", "30")
    children = pool.wait_children(2)
    job_id = jobs.enqueue("TEST_SLEEP", {"seconds": 60}, max_attempts=1)
    wait_for(lambda: jobs.starts(job_id), 15, "the job to start")
    [victim] = jobs.starts(job_id)
    try:
        _set_read_only(database_url, True)
        terminate_pool_backends(pool_engine)  # they reconnect read-only, like after a failover
        # The master cannot renew leases any more (its heartbeats meet read-only
        # sessions), so its children stop claiming.
        pool.wait_log("not claiming", 15)
        os.kill(victim, signal.SIGKILL)  # its job is settled by a master that cannot write
        wait_for(lambda: victim not in pool.children(), 10, "the master to reap the child")
    finally:
        _set_read_only(database_url, False)
    wait_for(lambda: jobs.get(job_id)["status"] == "DEAD_LETTER", 30,
             "the killed child's job to be settled once the database is writable")
    assert "killed by SIGKILL" in jobs.get(job_id)["lastError"]
    after = jobs.enqueue("TEST_RECORD", {})
    wait_for(lambda: jobs.get(after)["status"] == "COMPLETED", 30, "a later job to complete")
    assert set(children) - {victim} <= set(pool.children())  # no child crashed
    assert "Traceback" not in pool.log()


@pytest.mark.timeout(120)
def test_terminated_backends_never_crash_a_child_or_lose_a_job(
    start_pool: Callable[..., Pool], jobs: Jobs, pool_engine: Engine, route: Route,
    database_url: str,
) -> None:
    pool = start_pool("--concurrency", "2", *route.flags, url=route.url(database_url))
    children = pool.wait_children(2)
    ids = [jobs.enqueue("TEST_RECORD", {"seconds": 0.02}) for _ in range(60)]
    done = 0
    for _ in range(8):  # terminate while claims, completions and heartbeats are in flight
        wait_for(lambda done=done: jobs.statuses().get("COMPLETED", 0) > done, 30, "progress")
        done = jobs.statuses().get("COMPLETED", 0)
        terminate_pool_backends(pool_engine)

    def finished() -> bool:
        jobs.hurry()
        return jobs.all_done(60)

    wait_for(finished, 60, "every job completed", interval=0.3)
    assert jobs.runs() == {i: 1 for i in ids}
    assert pool.children() == children  # none crashed, none was respawned
    assert "Traceback" not in pool.log()
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(15) == 0


@pytest.mark.timeout(120)
def test_a_child_committing_quiet_jobs_into_a_hung_server_still_stops_on_term(
    start_pool: Callable[..., Pool], jobs: Jobs, database_url: str, proxy: FreezableProxy,
    route: Route,
) -> None:
    """A group that wrote nothing commits its completions (and its next claim) in one
    statement of the child's own (pool/child.py `commit_alone`). A server that stops
    answering mid-commit does not hold the pool past its TERM: the master, which cannot
    renew the job's lease either, stops the child before the lease could run out. The
    job is not lost: another pool completes it once the server answers."""
    from tests.pool.test_group_commit import HANDLERS

    flags = ("--concurrency", "1", "--stuck-timeout", "6", *route.flags)
    cut_off = start_pool(*flags, handlers=HANDLERS, url=proxy.url(database_url))
    cut_off.wait_children(1)
    job_id = jobs.enqueue("TEST_QUIET", {"sleep": 1.5})
    wait_for(lambda: jobs.starts(job_id), 15, "the job to start")
    # Another pool, which reaches the database: started now, it may rescue the job
    # once its lease is stale (a master must have been connected for a stuck
    # timeout first), and it looks every half second.
    start_pool(*flags, "--recovery-interval", "0.5", handlers=HANDLERS,
               url=route.url(database_url))
    proxy.freeze()  # the job ends into a server that never answers its completion
    cut_off.send(signal.SIGTERM)  # finish the job, then exit: the commit hangs
    assert cut_off.wait_exit(25) == 0
    # The master stopped the hung child itself, before its lease could run out, and
    # says so: not "out of memory?", the guess for a SIGKILL it did not send.
    assert "killed by SIGKILL from the master (its lease could not be renewed)" in cut_off.log()
    assert "out of memory" not in cut_off.log()
    proxy.thaw()
    wait_for(lambda: jobs.all_done(1), 40, "the job to be completed by another pool")
    assert jobs.get(job_id)["status"] == "COMPLETED"


@pytest.mark.timeout(90)
def test_an_idle_pool_exits_soon_after_term_when_the_server_never_answers(
    start_pool: Callable[..., Pool], jobs: Jobs, database_url: str, proxy: FreezableProxy,
    route: Route,
) -> None:
    """No job runs, and the server accepts connections but answers nothing: the
    child's claim and the master's last settlement (what the child may have claimed)
    would each wait out their bound (5 s). TERM still ends the pool at once; what it
    could not give back is left to stuck recovery, and it says so."""
    pool = start_pool("--concurrency", "1", *route.flags, url=proxy.url(database_url))
    done = jobs.enqueue("TEST_RECORD", {})  # the child has booted once it ran a job
    wait_for(lambda: jobs.get(done)["status"] == "COMPLETED", 15, "a job to complete")
    proxy.freeze()
    pool.wait_log("master: database unavailable", 15)  # its child waits on it too
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(3) == 0
    log = pool.log()
    assert "left for stuck recovery: unstarted jobs of" in log, log
    assert "Traceback" not in log
