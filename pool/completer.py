"""The completer: commits the outcomes that wait in a child's group
(pool/group_commit.py), with the claim of the next batch when there is one, and
settles job by job whatever a commit could not.

Three ways a group commits:

- `commit_group`: its transaction, which holds the jobs' writes, commits with
  their completions (and, at a batch's end, the next claim: the producer's
  `claim_in`);
- `commit_alone`: the jobs wrote nothing; their completions (and the next
  claim) are one statement that commits by itself;
- `send_ahead` / `collect_ahead`: that statement is sent before the batch's
  last job and runs on the server while the job runs (pool/ahead.py);
- `send_completions` / `collect_completions`: a group due before a job that is
  not its batch's last (jobs longer than `--commit-delay-ms` commit one by
  one) sends the completions alone, the same way, while the next jobs run,
  and reads their answer once it is there (a look that never waits, before
  each job), before the connection's next statement, or at the batch's end.
  A child that waited for each commit gave up its core for a round trip per
  job, and on a busy machine waited behind other processes to get it back
  (docs/benchmarks.md, "A burst of CPU-heavy jobs"). The statement is on the
  server before the next job starts, so a crash during that job repeats none
  of the jobs it completes; the master still hears of them only once the
  answer is read.

The master hears of a completion, and of a claim, only once its commit is
known: a claim it heard of before the commit would look lost to it, and so
would a completion. A SIGKILL between the commit and that word leaves rows held
by this worker that the master does not know of: when it reaps the child it
gives back, uncharged, every job of the child's it never heard start
(sql.RELEASE_UNSTARTED), and settles those it did as interrupted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from skiplock.pool import protocol
from skiplock.pool.ahead import AHEAD_MAX_S, AheadConnection, stale_after_s
from skiplock.pool.claim_size import Durations
from skiplock.pool.group_commit import Group, GroupAborted, Outcome
from skiplock.pool.outage import Outage
from skiplock.pool.outcomes import JobOutcome
from skiplock.pool.producer import Producer
from skiplock.pool.settler import STATEMENT_BOUND_S, Settler
from skiplock.queue_core import Job
from skiplock.queue_core.database import db, faults
from skiplock.queue_core.database.bounds import bounded
from skiplock.queue_core.lifecycle import (
    cancelled_among,
    complete_and_claim,
    complete_and_claim_result,
    complete_and_claim_statement,
    complete_many,
    complete_many_result,
    complete_many_statement,
    release_claimed_statement,
    release_unstarted,
)
from skiplock.queue_core.storable import describe_exception, first_line

log = logging.getLogger("skiplock.worker")

# When the job run while a claim was sent ahead overruns its expected time by
# this factor (and runs longer than the longest job a claim is sent ahead of),
# the jobs claimed ahead go back to the queue at once: they would otherwise wait
# unrun, on a lease nobody renews, while other children idle.
OVERRUN_FACTOR = 2.0


@dataclass
class _SentAhead:
    """A batch statement on its way (pool/ahead.py): the completions it carries, when it
    was sent (its claim's lease is dated by that), and its answer once read."""

    outcomes: list[Outcome]
    completions: list[tuple[Job, Any]]
    sent_at: float
    claims: bool = True  # it claims the next batch too (else: the completions alone)
    from_head: bool = True  # its claim starts at the index's head (else: a cursor's segments)
    timer: threading.Timer | None = None
    read: bool = False  # the answer was read (by the overrun's timer or the loop)
    done: set[str] | None = None
    next_jobs: list[Job] | None = None
    refused: SQLAlchemyError | None = None  # the server refused it: nothing committed
    failed: BaseException | None = None  # the answer was lost
    given_back: str | None = None  # why the jobs claimed ahead went back unrun


class Completer:
    def __init__(self, *, slot: int, worker_id: str, group: Group, settler: Settler,
                 producer: Producer, outage: Outage, lease_s: float,
                 ahead: AheadConnection, send: Callable[..., None],
                 send_quiet: Callable[[protocol.Message], None] | None = None) -> None:
        self.slot = slot
        self.worker_id = worker_id
        self.group = group
        self.settler = settler
        self.producer = producer
        self.outage = outage
        self.lease_s = lease_s
        self.ahead = ahead
        self.send = send
        # The quiet pipe (pool/protocol.py): read at the master's next turn, no wake-up.
        self.send_quiet = send_quiet
        self.sent: _SentAhead | None = None  # a batch statement sent ahead, not yet collected
        self.ahead_lock = threading.Lock()  # the loop's and the overrun timer's use of `ahead`

    def due(self, durations: Durations, job: Job) -> bool:
        return self.group.due(durations.expected(job.type))

    def report(self, outcomes: list[Outcome], next_jobs: list[Job] | None = None, *,
               for_loop: bool = True) -> None:
        """Tell the master how these jobs ended (committed) and, in the same write, what
        the same commit claimed."""
        self.producer.take(next_jobs, before=self.settler.announce(outcomes),
                           for_loop=for_loop)

    # -- committing the group ---------------------------------------------------

    def commit_group(self, claim_next: bool = False) -> None:
        """Commit the jobs that wait in the group; with `claim_next`, claim the next
        batch in the same transaction for the loop."""
        if not self.group.outcomes:
            # Nothing to commit, but a job settled alone may have left the group's
            # transaction open: never keep it idle in a transaction while we wait.
            self.group.discard()
            return
        if self.group.writes_nothing():
            self.commit_alone(claim_next)
            return
        try:
            outcomes, next_jobs = self.group.commit(
                self.producer.claim_in if claim_next else None)
        except GroupAborted as exc:
            self.settle_aborted(exc, claimed=claim_next)
            return
        # Committed: report the claim at once, before anything else can happen.
        self.report(outcomes, next_jobs)

    def commit_alone(self, claim_next: bool) -> None:
        """The group's jobs completed without touching the database: their completions
        (and the claim of the next batch) commit by themselves, in one statement. A
        statement the server refused (the claim's part, say) is retried as the
        completions alone; what cannot commit at all is settled job by job."""
        outcomes = self.group.take_all()  # nothing was sent in its transaction
        completions = [(o.job, o.result) for o in outcomes]
        limit = self.producer.limit() if claim_next else 0
        next_jobs: list[Job] | None = None
        try:
            try:
                with db.translate_errors():
                    if limit:
                        self.producer.claim_sent_at = time.monotonic()
                        done, next_jobs = complete_and_claim(
                            completions, self.worker_id, limit, self.producer.children,
                            self.producer.types, self.producer.cursor)
                    else:
                        done = complete_many(completions, flush=False)
            except SQLAlchemyError as exc:  # the server answered: no claim this time
                next_jobs = None
                done = self.complete_without_claim(completions, exc)
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            self.settle_aborted(GroupAborted(outcomes, set(), exc), claimed=bool(limit))
            return
        self.mark_completed(outcomes, done)
        self.report(outcomes, next_jobs)

    def mark_completed(self, outcomes: list[Outcome], done: set[str]) -> None:
        """Each outcome's word once its completion statement answered: completed, or
        (not ours any more) cancelled by an operator while it waited, or lost."""
        gone = [o.job.id for o in outcomes if o.job.id not in done]
        cancelled: set[str] = set()
        if gone:
            try:
                with bounded(STATEMENT_BOUND_S):
                    cancelled = cancelled_among(gone)
            except Exception as exc:  # only the word in a log line is at stake
                if faults.classify(exc) is None:
                    raise
        for o in outcomes:
            o.outcome = (JobOutcome.COMPLETED if o.job.id in done else
                         JobOutcome.CANCELLED if o.job.id in cancelled else JobOutcome.LOST)

    def complete_without_claim(self, completions: list[tuple[Job, Any]],
                               refused: SQLAlchemyError) -> set[str]:
        """The server refused the statement that completes and claims (nothing of it
        committed): the completions commit by themselves; the loop claims later."""
        log.warning("worker %d: completing with the claim of the next jobs failed (%s); "
                    "the completions commit alone", self.slot, describe_exception(refused))
        with bounded(STATEMENT_BOUND_S), db.translate_errors():
            return complete_many(completions)

    # -- what a commit could not do ------------------------------------------------

    def settle_aborted(self, aborted: GroupAborted, *, claimed: bool = False,
                       keep: list[str] | None = None) -> None:
        """The group's transaction rolled back (or its commit's answer was lost): settle
        each of its jobs on its own, as the one job's transaction would have been.
        `keep`: jobs of this worker's that ran or run now, never given back as unstarted."""
        cause = aborted.cause
        lost_connection = False
        if cause is None:
            reason = "another job of the same commit was lost (rescued elsewhere)"
        else:
            fault = faults.classify(cause)
            lost_connection = fault is not None and not fault.server_answered
            if lost_connection:
                self.outage.failed(cause)
            what = "the job's database connection was lost before it committed" \
                if lost_connection else "the jobs' commit failed"
            reason = f"{what}: {first_line(cause.__cause__ or cause)}"
        log.warning("worker %d: %d finished job(s) not committed (%s)", self.slot,
                    len(aborted.outcomes) - len(aborted.lost), reason)
        if claimed and lost_connection:
            # A commit whose answer was lost may have committed a claim of the next
            # jobs that nobody knows of: give back, uncharged, whatever this worker
            # holds and never started (nothing else of its batch is left but `keep`).
            ran = [o.job.id for o in aborted.outcomes] + list(keep or ())
            self.settler.settle(lambda: JobOutcome.RELEASED if release_unstarted(
                self.worker_id, ran, "claimed by a commit whose answer was lost; "
                "never started") is not None else JobOutcome.LOST)
        completed = [o for o in aborted.outcomes
                     if o.job.id not in aborted.lost and o.error is None]
        for o in aborted.outcomes:
            if o.job.id in aborted.lost:
                log.warning("job %s %s was no longer held by this worker (rescued elsewhere); "
                            "its result was discarded", o.job.type, o.job.id)
                o.outcome = JobOutcome.LOST
            elif o.error is not None:
                o.outcome = self.settler.fail(o.job, o.error, retry=o.retry,
                                              checkpoint=o.checkpoint)
            elif cause is None or lost_connection or len(completed) > 1:
                # Rolled back for another job's sake, cut short by the database, or by
                # a commit that the server refused for one of several jobs that cannot
                # be told apart: it ran, so an interruption, free only a few times
                # (queue_core/accounting.py); even a job that always spoils its
                # group's commit ends.
                o.outcome = self.settler.interrupted(o.job, reason, checkpoint=o.checkpoint)
            else:
                # The server refused this one job's commit: an attempt, or such a job
                # would come back forever (docs/lessons.md, poison jobs).
                o.outcome = self.settler.fail(o.job, reason, retry=True,
                                              checkpoint=o.checkpoint)
        self.send(*self.settler.announce(aborted.outcomes))

    def abandon_group(self, cause: BaseException) -> None:
        """The group's connection broke under a job: what waited in it is gone too."""
        waiting = self.group.take_all()
        if waiting:
            self.settle_aborted(GroupAborted(waiting, set(), cause))

    # -- the batch statement sent ahead ---------------------------------------------

    def send_ahead(self, last: Job, expected: float | None) -> bool:
        """Before the batch's `last` job: send the completions waiting in the group with
        the claim of the next batch, to run on the server while `last` runs
        (pool/ahead.py). False when the batch ends the usual way: the queue did not
        look deep, the group wrote to the database, `last` may run long, or the
        child takes no more work after it."""
        if (expected is None or expected > AHEAD_MAX_S
                or not self.producer.claim_size.last_full
                or not self.group.writes_nothing() or not self.outage.ready()):
            return False
        limit = self.producer.limit(after=1)
        if not limit:
            return False
        if self.sent is not None:  # one statement at a time on the connection
            self.collect_completions()
            if not self.outage.ready():
                return False
        if not self._connect_ahead():
            return False
        outcomes = self.group.take_all()  # nothing was sent in its transaction
        completions = [(o.job, o.result) for o in outcomes]
        sent_at = time.monotonic()
        statement, params = complete_and_claim_statement(
            completions, self.worker_id, limit, self.producer.children, self.producer.types,
            self.producer.cursor)
        try:
            with bounded(STATEMENT_BOUND_S):
                self.ahead.send(statement, params)
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            # It may have reached the server: settled as a commit whose answer was lost.
            self.settle_aborted(GroupAborted(outcomes, set(), exc), claimed=True,
                                keep=[last.id])
            return True
        sent = _SentAhead(outcomes, completions, sent_at, from_head="seg_hi" not in params)
        # Nobody renews the leases of the jobs it claims until the master hears of
        # them, after `last`: should `last` overrun, they go back at once.
        overrun = min(max(expected * OVERRUN_FACTOR, AHEAD_MAX_S),
                      stale_after_s(self.lease_s) / 2)
        sent.timer = threading.Timer(overrun, self._overran, args=(sent, last, overrun))
        sent.timer.daemon = True
        self.sent = sent
        sent.timer.start()
        return True

    def _connect_ahead(self) -> bool:
        """Open the send-ahead connection if it is not; False (the outage noted) when
        the database does not answer."""
        try:
            with bounded(STATEMENT_BOUND_S):
                self.ahead.connect()
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            self.outage.failed(exc)
            return False
        return True

    def send_completions(self, expected: float | None) -> bool:
        """Before a job that is not its batch's last, expected to run `expected`: send
        the completions waiting in the group, committed without the WAL flush as
        `commit_alone` commits them, to run on the server while the job runs;
        `collect_completions` reads their answer after it. False when the group
        commits the usual way: it wrote to the database, the job may run long (the
        master would hear of these jobs that much later), or the connection is not
        ready."""
        if (expected is None or expected > AHEAD_MAX_S or not self.group.outcomes
                or not self.group.writes_nothing() or not self.outage.ready()):
            return False
        if self.sent is not None:  # one statement at a time on the connection
            self.collect_completions()
            if not self.group.outcomes or not self.outage.ready():
                return False
        if not self._connect_ahead():
            return False
        outcomes = self.group.take_all()  # nothing was sent in its transaction
        completions = [(o.job, o.result) for o in outcomes]
        try:
            with bounded(STATEMENT_BOUND_S):
                self.ahead.send(*complete_many_statement(completions))
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            # It may have reached the server: settled as a commit whose answer was lost.
            self.settle_aborted(GroupAborted(outcomes, set(), exc))
            return True
        self.sent = _SentAhead(outcomes, completions, time.monotonic(), claims=False)
        return True

    def completions_answered(self) -> bool:
        """Whether completions sent alone are in flight and their answer is here."""
        return self.sent is not None and not self.sent.claims and self.ahead.answered()

    def collect_completions(self) -> None:
        """The answer of the completions sent alone (`send_completions`), reported."""
        sent, self.sent = self.sent, None
        assert sent is not None and not sent.claims
        with self.ahead_lock:
            self._read(sent)
        if sent.refused is not None:
            try:
                sent.done = self.complete_without_claim(sent.completions, sent.refused)
            except Exception as exc:
                if faults.classify(exc) is None:
                    raise
                sent.failed = exc
        if sent.failed is not None:
            self.settle_aborted(GroupAborted(sent.outcomes, set(), sent.failed))
            return
        self.mark_completed(sent.outcomes, sent.done or set())
        if self.send_quiet is None:
            self.report(sent.outcomes, for_loop=False)
            return
        # A commit that claimed nothing: the master reads of it at its next turn (within
        # a second), not at once. Waking it for every job of a burst cost the master
        # about 0.5 ms of CPU a job of 33 ms, taken from the jobs (docs/benchmarks.md,
        # "A burst of CPU-heavy jobs"); it learns of every claim at once still.
        for message in self.settler.announce(sent.outcomes):
            self.send_quiet(message)

    def _read(self, sent: _SentAhead) -> None:
        """Read the answer of the statement sent ahead into `sent` (holding ahead_lock)."""
        sent.read = True
        try:
            try:
                with bounded(STATEMENT_BOUND_S):
                    names, rows = self.ahead.receive()
                if sent.claims:
                    sent.done, sent.next_jobs = complete_and_claim_result(
                        sent.completions, names, rows, self.producer.cursor,
                        from_head=sent.from_head)
                else:
                    sent.done = complete_many_result(sent.completions, rows)
            except SQLAlchemyError as exc:  # the server answered: nothing of it committed
                sent.refused = exc
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            sent.failed = exc

    def _overran(self, sent: _SentAhead, last: Job, overrun: float) -> None:
        """The overrun timer, in its own thread while `last` runs on: read the answer
        and give the jobs it claimed back, unrun and uncharged."""
        with self.ahead_lock:
            if self.sent is not sent or sent.read:
                return
            try:
                self._read(sent)
            except Exception:  # a bug: leave the answer to the loop
                log.exception("worker %d: reading the claim sent ahead failed", self.slot)
                return
            if not sent.next_jobs:
                return
            reason = (f"claimed ahead while job {last.type} {last.id} ran past {overrun:.2f} s, "
                      "twice its expected time; never started")
            try:
                with bounded(STATEMENT_BOUND_S):
                    self.ahead.send(*release_claimed_statement(sent.next_jobs,
                                                               self.worker_id, reason))
                    self.ahead.receive()
            except Exception as exc:  # the loop gives them back (or runs them) itself
                log.warning("worker %d: could not give back the jobs claimed ahead now: %s",
                            self.slot, first_line(exc))
                return
            log.info("worker %d: %d job(s) claimed ahead given back: %s", self.slot,
                     len(sent.next_jobs), reason)
            sent.given_back = reason
            sent.next_jobs = None

    def collect_ahead(self) -> None:
        """After the batch's last job: the answer of the statement sent ahead, reported,
        and the next batch kept for the loop. The last job's own outcome waits in the
        group for the next batch's statement when that batch may carry it (it wrote
        nothing and there is a next batch, and `Group.due` bounds the wait); else it
        commits now."""
        if self.sent is not None and not self.sent.claims:
            self.collect_completions()
            self.commit_group(claim_next=True)
            return
        sent, self.sent = self.sent, None
        assert sent is not None
        if sent.timer is not None:
            sent.timer.cancel()
        with self.ahead_lock:
            if not sent.read:
                self._read(sent)
        if sent.refused is not None:
            try:
                sent.done = self.complete_without_claim(sent.completions, sent.refused)
                sent.next_jobs = None
            except Exception as exc:
                if faults.classify(exc) is None:
                    raise
                sent.failed = exc
        if sent.failed is not None:
            self.settle_aborted(GroupAborted(sent.outcomes, set(), sent.failed), claimed=True,
                                keep=[o.job.id for o in self.group.outcomes])
        else:
            self.mark_completed(sent.outcomes, sent.done or set())
            next_jobs = sent.next_jobs
            age = time.monotonic() - sent.sent_at
            if next_jobs and age > stale_after_s(self.lease_s):
                # Its answer came too late to start them safely: the master might not
                # renew their leases in time, and a job must not run twice at once.
                self.producer.give_back(next_jobs, (
                    f"claimed ahead {age:.1f} s before the worker could start it, too "
                    "close to the end of its lease; never started"))
                next_jobs = None
            self.producer.claim_sent_at = sent.sent_at
            self.report(sent.outcomes, next_jobs, for_loop=bool(next_jobs))
        if self.producer.next_jobs and self.group.writes_nothing():
            return
        self.commit_group(claim_next=not self.producer.next_jobs)

    def close(self) -> None:
        sent, self.sent = self.sent, None
        if sent is not None and sent.timer is not None:
            sent.timer.cancel()
