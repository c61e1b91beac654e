"""The master's decisions, fast: no fork, no wait, a clock the test turns.

In the manner of gunicorn's arbiter tests: a `Master` is built but never run;
the test gives it children (records with a real pipe each), writes their
messages into the pipes, hands it wait statuses through its `waitpid`, moves
its clock, and reads what it decided: the signals it sent (its children's
`kill` is recorded, no process is touched) and what it wrote to the real job
table (claims, settlements and leases are real rows in the test database).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from skiplock import queue_core as q
from skiplock.pool import protocol
from skiplock.pool.children import WorkerChild
from skiplock.pool.master import ABORT_GRACE_S, IDLE_STOP_S, LOST_GRACE_S, Master
from skiplock.pool.states import Cause, Due, PoolState
from skiplock.queue_core.config import load_settings
from skiplock.queue_core.database import db
from tests.support import Clock

KILLED_BY_SIGKILL = signal.SIGKILL  # a wait status: killed by signal 9
EXITED_ABORTED = 4 << 8


class Harness:
    """A master, its clock, the signals it sent and the statuses its waitpid returns."""

    def __init__(self, database_url: str, **settings: Any) -> None:
        self.clock = Clock(1000.0)
        self.sent: list[tuple[int, int]] = []
        self.statuses: dict[int, int] = {}
        self.pipes: dict[int, int] = {}
        options = {"concurrency": 2, "heartbeat_s": 0.5, **settings}
        self.master = Master(load_settings(database_url=database_url, **options),
                             clock=self.clock, waitpid=self.waitpid)

    def waitpid(self, pid: int, flags: int) -> tuple[int, int]:
        return (pid, self.statuses.pop(pid)) if pid in self.statuses else (0, 0)

    def kill(self, pid: int, signum: int) -> None:
        self.sent.append((pid, signum))

    def child(self, slot: int, pid: int) -> WorkerChild:
        read_fd, write_fd = os.pipe()
        child = WorkerChild(slot, pid, f"testhost:{pid}:x", protocol.Reader(read_fd),
                            kill=self.kill)
        child.booted = True
        self.master.children[pid] = child
        self.pipes[pid] = write_fd
        return child

    def say(self, child: WorkerChild, message: protocol.Message) -> None:
        protocol.send(self.pipes[child.pid], message)
        self.master.read_messages()

    def run_job(self, child: WorkerChild, timeout_s: float | None = None) -> q.Job:
        """A real job, claimed for the child now, reported claimed and started."""
        q.enqueue("T", {}, max_attempts=3)
        [job] = q.claim(child.worker_id)
        self.say(child, protocol.Claimed([(job.id, child.worker_id, job.attempts)],
                                         sent_at=self.clock()))
        self.say(child, protocol.Started(job.id, "T", child.worker_id, job.attempts, 3,
                                         timeout_s))
        return job

    def dies(self, child: WorkerChild, status: int) -> None:
        """The child's wait status arrives; the master reaps it and, in the same turn's
        database work, settles what it owes."""
        self.statuses[child.pid] = status
        self.master.reap()
        self.master.maintain()

    def signals_to(self, child: WorkerChild) -> list[int]:
        return [signum for pid, signum in self.sent if pid == child.pid]

    def close(self) -> None:
        for fd in self.pipes.values():
            os.close(fd)
        for child in self.master.children.values():
            child.reader.close()


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    yield h
    h.close()


def row(job_id: str) -> Any:
    with db.get_engine().connect() as conn:
        return conn.execute(text('SELECT *, status::text AS st, xmin::text AS version '
                                 'FROM "WorkerJob" WHERE id = :id'),
                            {"id": job_id}).one()


def test_a_child_killed_mid_job_fails_it_with_the_signal_and_is_respawned_at_once(
    harness: Harness,
) -> None:
    child = harness.child(0, 101)
    job = harness.run_job(child)
    harness.dies(child, KILLED_BY_SIGKILL)
    assert harness.master.children == {}
    r = row(job.id)
    assert (r.st, r.attempts) == ("PENDING", 1)
    assert "killed by SIGKILL" in r.lastError and "attempt 1/3" in r.lastError
    assert harness.master.respawn_at[0] == harness.clock.now  # the first crash: at once
    assert harness.master.heartbeats.renewed == {}  # no lease kept for it any more


def test_a_job_over_its_timeout_gets_quit_then_kill_on_one_deadline(database_url: str) -> None:
    harness = Harness(database_url, stuck_timeout_s=30.0)  # no fence in the way
    child = harness.child(0, 102)
    job = harness.run_job(child, timeout_s=2.0)
    harness.clock.advance(1.9)
    harness.master.enforce_deadlines()
    assert harness.sent == []
    assert [(at, c) for at, due, c in harness.master.deadlines()
            if due == Due.JOB_TIMEOUT] == [(1002.0, child)]  # it wakes for it
    harness.clock.advance(0.1)
    harness.master.enforce_deadlines()
    assert harness.signals_to(child) == [signal.SIGQUIT]
    assert child.cause == Cause.KILLED_TIMEOUT
    harness.clock.advance(ABORT_GRACE_S)
    harness.master.enforce_deadlines()
    assert harness.signals_to(child) == [signal.SIGQUIT, signal.SIGKILL]
    harness.dies(child, KILLED_BY_SIGKILL)
    assert row(job.id).lastError.startswith("timed out after 2s")
    harness.close()


def test_a_lease_that_cannot_be_renewed_is_fenced_before_it_runs_out(harness: Harness) -> None:
    master = harness.master
    child = harness.child(0, 103)
    job = harness.run_job(child)
    lease = master.heartbeats.lease_s
    margin = master.heartbeats.margin_s
    assert (lease, margin) == (3.0, 1.0)  # 6 heartbeats of 0.5 s; fenced a third earlier
    # No heartbeat reaches the database (the test never lets the master beat).
    fence = [d for d in master.deadlines() if d[1] == Due.FENCE]
    assert fence == [(1000.0 + lease - margin, Due.FENCE, child)]
    harness.clock.advance(lease - margin - 0.01)
    master.enforce_deadlines()
    assert harness.sent == []
    harness.clock.advance(0.01)
    master.enforce_deadlines()
    assert harness.signals_to(child) == [signal.SIGKILL]  # no grace: it must be dead now
    assert child.cause == Cause.FENCED
    harness.dies(child, KILLED_BY_SIGKILL)
    r = row(job.id)
    assert (r.st, r.attempts) == ("PENDING", 0)  # back, and the attempt is not counted
    assert "lease could not be renewed" in r.lastError


def test_renewed_leases_move_the_fence_and_a_lost_job_is_killed_after_its_grace(
    harness: Harness,
) -> None:
    master = harness.master
    child = harness.child(0, 104)
    job = harness.run_job(child)
    harness.clock.advance(1.5)
    master.maintain()  # a real heartbeat
    assert master.heartbeats.fence_at(job.id) == 1001.5 + 2.0
    assert master.gate.deadline() == 1001.5 + master.claim_window_s  # children may claim
    with db.get_engine().begin() as conn:  # rescued and taken by another host meanwhile
        conn.execute(text('UPDATE "WorkerJob" SET "lockedBy" = \'other:1:y\' WHERE id = :id'),
                     {"id": job.id})
    harness.clock.advance(0.5)
    master.maintain()
    assert child.lost == {job.id} and harness.sent == []
    harness.clock.advance(LOST_GRACE_S)
    master.enforce_deadlines()
    assert harness.signals_to(child) == [signal.SIGKILL]
    assert child.cause == Cause.KILLED_LOST
    harness.dies(child, KILLED_BY_SIGKILL)
    assert row(job.id).lockedBy == "other:1:y"  # the other host's run is left alone


def test_a_locked_row_is_busy_not_lost_and_the_other_lease_is_renewed(harness: Harness) -> None:
    master = harness.master
    first, second = harness.child(0, 105), harness.child(1, 106)
    locked, free = harness.run_job(first), harness.run_job(second)
    harness.clock.advance(1.0)
    with db.get_engine().connect() as session:
        transaction = session.begin()
        session.execute(text('SELECT 1 FROM "WorkerJob" WHERE id = :id FOR UPDATE'),
                        {"id": locked.id})
        master.maintain()
        transaction.rollback()
    assert master.heartbeats.renewed[free.id] == 1001.0
    assert master.heartbeats.renewed[locked.id] == 1000.0  # not renewed, and not lost:
    assert first.lost == set() and not master.outage.active
    assert master.heartbeats.next_at == 1001.0 + 0.5  # retried at the next beat


def test_a_fresh_lease_is_read_not_rewritten_and_its_fence_stays_where_it_was(
    harness: Harness,
) -> None:
    """A beat writes only the leases that need it (pool/heartbeats.py): one dated less
    than `fresh_s` ago keeps its row version and its fence, is not taken for busy, and
    is still found lost when another host has it."""
    master = harness.master
    child, other = harness.child(0, 107), harness.child(1, 108)
    assert master.heartbeats.fresh_s == 0.25  # half of the 0.5 s heartbeat
    old = harness.run_job(child)  # dated 1000.0
    harness.clock.advance(0.4)
    fresh, taken = harness.run_job(other), harness.run_job(child)  # dated 1000.4
    with db.get_engine().begin() as conn:  # rescued and taken by another host meanwhile
        conn.execute(text('UPDATE "WorkerJob" SET "lockedBy" = \'other:1:y\' WHERE id = :id'),
                     {"id": taken.id})
    version = {j.id: row(j.id).version for j in (old, fresh)}
    harness.clock.advance(0.1)
    master.maintain()
    assert row(old.id).version != version[old.id] and master.heartbeats.renewed[old.id] == 1000.5
    assert row(fresh.id).version == version[fresh.id]  # 0.1 s old: not written
    assert master.heartbeats.fence_at(fresh.id) == 1000.4 + 3.0 - 1.0
    assert master.heartbeats.next_at == 1000.5 + 0.5  # a full interval: nothing was busy
    assert other.lost == set() and child.lost == {taken.id}
    harness.clock.advance(0.5)
    master.maintain()  # 0.6 s old now: written
    assert row(fresh.id).version != version[fresh.id]
    assert master.heartbeats.renewed[fresh.id] == 1001.0


def test_with_the_tightest_lease_every_lease_is_written(database_url: str) -> None:
    """Three heartbeats of lease leave no two intervals to spare before the fence:
    nothing is skipped."""
    harness = Harness(database_url, stuck_timeout_s=1.5)
    try:
        assert harness.master.heartbeats.fresh_s == 0.0
        child = harness.child(0, 109)
        job = harness.run_job(child)
        version = row(job.id).version
        harness.master.maintain()
        assert row(job.id).version != version
    finally:
        harness.close()


def test_recovery_waits_for_a_full_stuck_timeout_of_unbroken_connection(
    harness: Harness,
) -> None:
    master = harness.master
    q.enqueue("T", {})
    [stale] = q.claim("deadhost:1:z")
    with db.get_engine().begin() as conn:
        conn.execute(text('UPDATE "WorkerJob" SET "lockedAt" = now() - interval \'1 hour\''))
    master.maintain()  # connected from now (a master that just started counts as reconnected)
    assert row(stale.id).st == "PROCESSING"
    harness.clock.advance(2.9)
    master.maintain()
    assert row(stale.id).st == "PROCESSING"
    master.database_failed(q.DatabaseUnavailable("cut off"))  # the clock starts again
    harness.clock.advance(1.0)
    master.outage.retry_at = harness.clock.now
    master.maintain()
    assert row(stale.id).st == "PROCESSING"
    assert master.recovery.next_due() == harness.clock.now + 3.0
    harness.clock.advance(3.0)
    master.maintain()
    assert row(stale.id).st == "PENDING"


def test_a_drain_terms_everyone_then_kills_and_releases_what_is_left(harness: Harness) -> None:
    master = harness.master
    busy, idle = harness.child(0, 107), harness.child(1, 108)
    job = harness.run_job(busy)
    master.begin_drain("SIGTERM")
    assert master.state == PoolState.DRAINING
    assert harness.signals_to(busy) == [signal.SIGTERM] == harness.signals_to(idle)
    harness.dies(idle, 0)
    harness.clock.advance(master.settings.graceful_timeout_s)
    master.enforce_deadlines()
    assert harness.signals_to(busy) == [signal.SIGTERM, signal.SIGKILL]
    harness.dies(busy, KILLED_BY_SIGKILL)
    r = row(job.id)
    assert (r.st, r.attempts) == ("PENDING", 0)
    assert master.children == {}


def test_every_deadline_comes_from_one_list(harness: Harness) -> None:
    master = harness.master
    child = harness.child(0, 109)
    harness.run_job(child, timeout_s=10.0)
    master.maintain()
    master.begin_drain("SIGTERM")
    kinds = {due for _, due, _ in master.deadlines()}
    assert {Due.TICK, Due.HEARTBEAT, Due.KILL, Due.JOB_TIMEOUT, Due.FENCE} <= kinds
    first = min(at for at, _, _ in master.deadlines())
    assert master.next_wait() == pytest.approx(max(0.02, min(1.0, first - harness.clock.now)))
    harness.dies(child, EXITED_ABORTED)


def test_children_claim_only_while_their_master_keeps_leases(database_url: str) -> None:
    import time

    from skiplock.pool.child import Child
    from tests.support import wait_for

    harness = Harness(database_url, listen=False)
    harness.master.clock = time.monotonic  # the gate is read with the host's own clock
    read_fd, write_fd = os.pipe()
    child = Child(harness.master.settings, slot=0, worker_id="testhost:1:x",
                  master_pid=os.getpid(), fd=write_fd, database_url=database_url,
                  gate=harness.master.gate)
    try:
        assert not child.producer.may_claim()  # no heartbeat has reached the database yet
        harness.master.maintain()
        assert child.producer.may_claim()
        # The master stops reaching the database (or stops altogether): nothing moves
        # the gate's deadline, and it closes by itself.
        wait_for(lambda: not child.producer.may_claim(), 5, "the gate to close")
        harness.master.maintain()
        assert child.producer.may_claim()
    finally:
        for fd in (read_fd, write_fd, child.wake_r, child.wake_w):
            os.close(fd)
        harness.close()


def test_a_turn_whose_budget_ran_out_is_no_outage(harness: Harness) -> None:
    from skiplock.queue_core.database.bounds import bounded

    master = harness.master
    master.maintain()
    with bounded(0.0):  # as a turn that spent its whole budget on the heartbeats
        master.heartbeats.soon()
        master.maintain()
    assert not master.outage.active
    assert master.recovery.connected_since == 1000.0  # the unbroken connection goes on


def test_a_periodic_walk_the_server_cancels_for_its_time_is_slow_not_an_outage(
    harness: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    # Behind a held snapshot the stuck lookup (and the mover's, aging's walks) grow
    # past the turn's bound: counted as an outage, that stopped every claim of the pool.
    from skiplock.pool.recovery import Recovery
    from skiplock.queue_core.database.bounds import bounded
    from skiplock.queue_core.database.db import connect

    class SlowLookup(Recovery):
        def run_once(self, now: float) -> q.Recovered:
            self.looking_whole = True
            with bounded(0.2), connect() as c:  # the server cancels it (statement_timeout)
                c.execute(text("SELECT pg_sleep(5)"))
            return q.Recovered()

    master = harness.master
    master.maintain()
    master.recovery = slow = SlowLookup(interval_s=5.0, stuck_timeout_s=3.0)
    slow.connected(harness.clock.now - 10)
    harness.clock.advance(1.0)
    master.maintain()
    assert not master.outage.active
    assert slow.next_at == harness.clock.now + 5.0 and slow.whole_at == harness.clock.now + 60.0
    assert "the stuck lookup took longer than this turn's" in caplog.text
    assert master.gate.is_open(harness.clock.now)  # the children go on claiming


def test_a_drain_gives_a_child_with_no_job_a_short_grace_and_a_running_job_its_whole(
    harness: Harness,
) -> None:
    """A child with no job exits at once on TERM unless a statement to a server that
    does not answer holds it; one that started a job just before the TERM (its
    Started read after the drain began) still gets the drain's whole grace."""
    master = harness.master
    idle, starting = harness.child(0, 110), harness.child(1, 111)
    master.begin_drain("SIGTERM")
    job = harness.run_job(starting)  # it had started before the TERM reached it
    harness.clock.advance(IDLE_STOP_S)
    master.enforce_deadlines()
    assert harness.signals_to(idle) == [signal.SIGTERM, signal.SIGKILL]
    assert harness.signals_to(starting) == [signal.SIGTERM]
    assert starting.kill_at == master.stop_deadline
    assert row(job.id).st == "PROCESSING"


def test_a_lease_fenced_because_its_row_is_locked_says_so_and_names_the_locker(
    harness: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    """The database answers every beat; another session holds the job's row until the
    lease must be given up. The log line and lastError say that, not "database
    unreachable", and name the session that holds the lock."""
    from skiplock.queue_core.database.bounds import bounded

    master = harness.master
    child = harness.child(0, 112)
    job = harness.run_job(child)
    with db.get_engine().connect() as session:
        transaction = session.begin()
        session.execute(text('SELECT 1 FROM "WorkerJob" WHERE id = :id FOR UPDATE'),
                        {"id": job.id})
        locker = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        harness.clock.advance(0.5)
        master.maintain()  # the database answers: the row is busy
        assert not master.outage.active
        harness.clock.advance(master.heartbeats.lease_s - master.heartbeats.margin_s)
        master.enforce_deadlines()
        assert harness.signals_to(child) == [signal.SIGKILL] and child.cause == Cause.FENCED
        [line] = [r.getMessage() for r in caplog.records if "not renewed" in r.getMessage()]
        assert f"its row is locked by another session (pid {locker})" in line
        assert "unreachable" not in line
        harness.statuses[child.pid] = KILLED_BY_SIGKILL
        master.reap()
        with bounded(master.budget_s):
            master.maintain()  # the release waits for the lock: tried again later
        transaction.rollback()
    harness.clock.advance(1.0)
    master.maintain()
    r = row(job.id)
    assert (r.st, r.attempts) == ("PENDING", 0)
    assert "lease could not be renewed" in r.lastError
    assert f"its row was locked by another session (pid {locker})" in r.lastError
    assert "unreachable" not in r.lastError


def test_a_job_killed_for_its_timeout_while_its_row_is_locked_is_settled_as_a_timeout(
    harness: Harness,
) -> None:
    """Another session holds the row when the master owes the job its timeout, and
    long enough for the lease to go stale. Once the lock goes, the master's own stuck
    recovery must not take the job first (and settle it as a rescue, an interruption):
    the settlement, retried until it can write, ends it as the timeout it was."""
    from skiplock.queue_core.database.bounds import bounded

    master = harness.master
    child = harness.child(0, 113)
    job = harness.run_job(child, timeout_s=1.0)
    with db.get_engine().connect() as session:
        transaction = session.begin()
        session.execute(text('SELECT 1 FROM "WorkerJob" WHERE id = :id FOR UPDATE'),
                        {"id": job.id})
        harness.clock.advance(1.0)
        master.enforce_deadlines()
        assert harness.signals_to(child) == [signal.SIGQUIT]
        harness.statuses[child.pid] = EXITED_ABORTED
        master.reap()
        for turn in range(3):  # turns that reach the database; the settlement waits in each
            harness.clock.advance(1.2 if turn else 0.0)
            with bounded(master.budget_s):
                master.maintain()
            assert [s.ref.id for s in master.owed.pending] == [job.id]
        # Connected for a whole stuck timeout now, and less than a retry's wait after
        # the settlement's last try.
        harness.clock.advance(0.7)
        assert master.recovery.due(harness.clock.now)
        # The lock outlived the lease: the row is stale when it is let go.
        session.execute(text('UPDATE "WorkerJob" SET "lockedAt" = now() - interval \'1 hour\' '
                             "WHERE id = :id"), {"id": job.id})
        transaction.commit()
    while master.owed.pending:  # the turns after the lock went: less than a retry's wait apart
        master.maintain()
        harness.clock.advance(0.3)
    r = row(job.id)
    assert r.lastError.startswith("timed out after 1s"), r.lastError
    assert (r.st, r.attempts, r.interruptions) == ("PENDING", 1, None)  # an attempt counted
