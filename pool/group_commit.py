"""Group commit: consecutive jobs of one child share a transaction.

A commit that waits for its WAL flush is most of what a no-op job costs. So a
child keeps one transaction open across consecutive jobs, and commits it
before a job would keep the oldest waiting outcome uncommitted past
`--commit-delay-ms` (`Group.due`), when the batch ends, or when the child
stops. A delay of 0 commits after every job.

The delay is also what a child's crash can cost: an outcome that waits for
its commit is lost with the child, and its job runs again. So no outcome waits
longer than the delay, whatever its job wrote: a crash repeats the job in
flight and at most the jobs that finished within the delay before it. Jobs
that run longer than the delay commit one by one; a commit that carries no
claim then does not wait for the WAL flush (sql.COMPLETE_MANY_NO_FLUSH), so a
commit per job costs a round trip and not a flush, and when the jobs wrote
nothing the child does not wait for that round trip either: it runs the next
job meanwhile (pool/completer.py, `send_completions`; docs/reliability.md,
"What a crash repeats").

What stays true with it:

- A job's writes and its completion commit together or not at all. A job
  that touches the database (`skiplock.queue_core.database.db.transaction()`) runs in a
  savepoint taken the first time it asks for the connection (`JobScope`); a
  job that fails rolls back to it and is failed in the same transaction.
- The completions are written at commit time, fenced, in one statement
  (`lifecycle.complete_many`), and not when each job ends: a completion
  written early would hold the job's row lock until the commit, and the
  master's heartbeat of that row would wait for it. A job found lost then
  (rescued elsewhere) aborts the whole group: its writes are mixed with the
  others', so the others go back to the queue and run again (`GroupAborted`).
  A job an operator cancelled while it waited is no such loss: it ran, and
  the others commit.
- A group whose jobs all completed without touching the database has nothing
  to commit but their completions: they are written, with the claim of the
  next batch, by one statement that commits by itself
  (`lifecycle.complete_and_claim`, pool/completer.py).
- A crash loses only the uncommitted outcomes: the master still holds those
  jobs (it hears `finished` only after the commit), knows they started, and
  settles them as interrupted; they run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import NestedTransaction

from skiplock.pool.outcomes import JobOutcome, after_failure
from skiplock.queue_core import Job, lifecycle
from skiplock.queue_core.database import db


@dataclass
class Outcome:
    """A job's end, waiting in the group for its commit."""

    job: Job
    duration_s: float
    ended_at: float  # monotonic
    result: Any = None
    error: str | None = None  # set: the job failed
    retry: bool = True
    outcome: JobOutcome | None = None  # known once committed (or settled otherwise)
    # The run's latest `skiplock.checkpoint` (JSON text), for a failure, or for an
    # interruption should the commit not happen; a completion clears the row's.
    checkpoint: str | None = None


class GroupAborted(Exception):
    """The group's transaction rolled back: nothing in it was committed.

    `lost` are the ids a fenced completion found no longer ours; `outcomes`
    every job whose end was waiting for the commit."""

    def __init__(self, outcomes: list[Outcome], lost: set[str], cause: BaseException | None):
        super().__init__(str(cause) if cause else f"{len(lost)} job(s) lost before the commit")
        self.outcomes, self.lost, self.cause = outcomes, lost, cause


class JobScope:
    """What `db.transaction()` yields to one job: the group's connection, inside a
    savepoint taken the first time the job asks for it (a job that never touches
    the database costs no savepoint)."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.savepoint: NestedTransaction | None = None

    def __call__(self) -> Connection:
        # Called from the handler's code, but skiplock's own statement: translated
        # (a lost connection is an interruption, not the handler's failure).
        with db.translate_errors():
            conn = self.group.connection()
            if self.savepoint is None:
                self.savepoint = conn.begin_nested()
                self.group.touched = True
        return conn

    def release(self) -> None:
        if self.savepoint is not None and self.savepoint.is_active:
            self.savepoint.commit()

    def rollback(self) -> None:
        if self.savepoint is not None and self.savepoint.is_active:
            self.savepoint.rollback()


class Group:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.conn: Connection | None = None
        self.outcomes: list[Outcome] = []
        self.connect_failed = False
        self.touched = False  # a job of the group used its transaction (JobScope)
        self.failures = 0  # outcomes waiting with an error (failed in the transaction)

    def connection(self) -> Connection:
        """The group's transaction, begun on first use. The connection goes back to the
        engine's pool after each commit, where the child's other statements (its own
        claims, a failure settled alone) find it: a child still uses one connection."""
        if self.conn is None:
            self.connect_failed = True  # until the connection is made
            self.conn = db.get_engine().connect()
            self.connect_failed = False
        if not self.conn.in_transaction():
            self.conn.begin()
        return self.conn

    def open(self) -> bool:
        """Whether the group's transaction is already begun (`connection()` would
        return at once)."""
        return self.conn is not None and self.conn.in_transaction()

    def broken(self) -> bool:
        """Whether the group's connection could not be made or has gone bad."""
        return self.connect_failed or (self.conn is not None
                                       and (self.conn.invalidated or self.conn.closed))

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if outcome.error is not None:
            self.failures += 1

    def writes_nothing(self) -> bool:
        """Whether the group's jobs all completed without touching their transaction:
        then nothing but their completions needs committing, and those can commit
        alone, in one statement (pool/child.py `commit_alone`)."""
        return not self.touched and not self.failures

    def due(self, next_expected_s: float | None) -> bool:
        """Whether to commit before the next job (expected to run `next_expected_s`,
        None when unknown): when the oldest waiting outcome would otherwise still
        wait for its commit later than the delay after it ended."""
        if not self.outcomes:
            return False
        if next_expected_s is None:
            return True
        waited = time.monotonic() - self.outcomes[0].ended_at
        return waited + next_expected_s >= self.delay_s

    def commit(self, claim_next: Callable[[Connection], list[Job] | None] | None = None
               ) -> tuple[list[Outcome], list[Job] | None]:
        """Write the waiting outcomes (and claim the next batch, if asked) and commit.

        Raises GroupAborted when the transaction rolled back instead."""
        outcomes, self.outcomes, self.failures = self.outcomes, [], 0
        next_jobs: list[Job] | None = None
        try:
            with db.translate_errors():
                conn = self.connection()
                done = [o for o in outcomes if o.error is None]
                if done:
                    # Not flushed unless it claims (sql.COMPLETE_MANY_NO_FLUSH).
                    held = lifecycle.complete_many([(o.job, o.result) for o in done], conn=conn,
                                                   flush=claim_next is not None)
                    gone = {o.job.id for o in done} - held
                    cancelled = lifecycle.cancelled_among(sorted(gone), conn=conn) if gone \
                        else set()
                    if gone - cancelled:
                        conn.rollback()
                        raise GroupAborted(outcomes, gone - cancelled, None)
                    for o in done:
                        o.outcome = JobOutcome.CANCELLED if o.job.id in cancelled \
                            else JobOutcome.COMPLETED
                for o in outcomes:
                    if o.error is not None:
                        status = lifecycle.fail(o.job, o.error, retry=o.retry, conn=conn,
                                                checkpoint=o.checkpoint)
                        o.outcome = after_failure(status)
                if claim_next is not None:
                    next_jobs = claim_next(conn)
                conn.commit()
        except GroupAborted:
            raise
        except Exception as exc:
            self.discard()
            raise GroupAborted(outcomes, set(), exc) from exc
        self.discard()  # committed: nothing left to roll back; the connection goes back
        return outcomes, next_jobs

    def take_all(self) -> list[Outcome]:
        """Forget the waiting outcomes and roll their transaction back (the connection
        broke under a job, or the child gives them up)."""
        outcomes, self.outcomes, self.failures = self.outcomes, [], 0
        self.discard()
        return outcomes

    def discard(self) -> None:
        conn, self.conn = self.conn, None
        self.connect_failed = False
        self.touched = False
        if conn is not None:
            try:
                conn.rollback()
                conn.close()
            except Exception:  # a broken connection: the pool invalidates it
                conn.invalidate()

    def close(self) -> None:
        self.discard()
