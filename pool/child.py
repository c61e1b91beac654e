"""A worker child: claim a job, run its handler, settle it, again.

A busy child claims its next batch in the transaction that completes the last
job of the current one (`claim_with_completion`), and consecutive jobs share
that transaction (`pool/group_commit.py`): one commit per group of jobs. The
claim size adapts to the backlog (`pool/claim_size.py`).

The master forks the child and calls `Child(...).run()`, whose return value
becomes the exit status. A child starts clean (docs/lessons.md, "A child starts clean"): it resets the
signal handlers it inherited, reseeds `random`, drops the database pool it
inherited and opens its own connections (docs/lessons.md: no connection crosses a
fork), sets its title, and arranges to die with its master. It then imports
the handler modules named in the settings, so that the children the master
forks after a HUP load the new code.

The child settles only the jobs it ran to an end (completed, failed, lost). A
job it never finished because it died, was stopped, or timed out is settled by
the master, which learns from `waitpid` how the child ended. A database error
never ends a child: whatever its class (queue_core/faults.py), the child waits
it out with a back-off, as the master does, and it takes no new work while its
master cannot keep the leases (pool/claim_gate.py). Signals:
TERM finishes the running job and exits; QUIT abandons the job at once (the
handler gets `Abandon`, a BaseException, its transaction rolls back); INT is
ignored, so that Ctrl-C in a terminal drains gracefully through the master.
"""

from __future__ import annotations

import logging
import os
import random
import select
import signal
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from types import FrameType
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from skiplock.handlers import registry
from skiplock.handlers.registry import JobResult, Registration
from skiplock.pool import lifeline, protocol
from skiplock.pool.ahead import AHEAD_MAX_S, AheadConnection, stale_after_s
from skiplock.pool.claim_gate import ClaimGate
from skiplock.pool.claim_size import ClaimSize, Durations
from skiplock.pool.group_commit import Group, GroupAborted, JobScope, Outcome
from skiplock.pool.listener import Listener
from skiplock.pool.outage import Outage
from skiplock.pool.postmortem import EXIT_ABORTED, EXIT_BOOT_FAILURE, EXIT_OK
from skiplock.pool.proctitle import set_title, worker_title
from skiplock.pool.progress_reporter import ProgressReporter
from skiplock.queue_core import (
    Job,
    claim,
    db,
    fail,
    faults,
    grants,
    job_progress,
    migrate,
    release,
    sql,
)
from skiplock.queue_core.bounds import bounded
from skiplock.queue_core.cancel import end_cancelled
from skiplock.queue_core.config import Settings
from skiplock.queue_core.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidPayload,
    PermissionDenied,
)
from skiplock.queue_core.lifecycle import (
    complete_and_claim,
    complete_and_claim_result,
    complete_and_claim_statement,
    complete_many,
    interrupt,
    release_unstarted,
)
from skiplock.queue_core.payloads import validate_payload
from skiplock.queue_core.snooze import snooze
from skiplock.queue_core.storable import describe_exception, log_reason

log = logging.getLogger("skiplock.worker")

_FAIL_OUTCOMES = {"PENDING": "retried", "DEAD_LETTER": "dead_lettered", None: "lost"}
_FAILED = frozenset({"retried", "dead_lettered"})  # outcomes logged with their reason

# The child's own statements on the queue (a claim, a settlement outside a job's
# transaction) give up after this, so that a hung server cannot hold a child
# past its master's TERM; a handler's statements are not limited.
STATEMENT_BOUND_S = 5.0


class Abandon(BaseException):
    """The master asked this child to drop its job now (SIGQUIT)."""


class _Failed(Exception):
    def __init__(self, result: JobResult) -> None:
        super().__init__(result.error)
        self.result = result


@dataclass
class _SentAhead:
    """A batch statement on its way (pool/ahead.py): the completions it carries, and
    when it was sent (its claim's lease is dated by that)."""

    outcomes: list[Outcome]
    completions: list[tuple[Job, Any]]
    sent_at: float


class PollInterval:
    """The seed's adaptive polling: the minimum after a job, one step longer per empty poll."""

    def __init__(self, min_s: float, max_s: float, step_s: float) -> None:
        self.min_s, self.max_s, self.step_s = min_s, max_s, step_s
        self.current = min_s

    def after_empty(self) -> float:
        wait = self.current
        self.current = min(self.current + self.step_s, self.max_s)
        return wait

    def reset(self) -> None:
        self.current = self.min_s


class Child:
    def __init__(
        self, settings: Settings, *, slot: int, worker_id: str, master_pid: int, fd: int,
        database_url: str, gate: ClaimGate | None = None, quiet_fd: int | None = None,
        children: int | None = None, served: Collection[str] | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.slot = slot
        self.worker_id = worker_id
        self.master_pid = master_pid
        self.fd = fd
        self.sender = protocol.Sender(fd, quiet_fd)
        self.stopping = False
        self.abandoning = False
        self.in_handler = False
        self.jobs_done = 0
        self.poll = PollInterval(settings.poll_min_s, settings.poll_max_s, settings.poll_step_s)
        self.durations = Durations()
        self.claim_size = ClaimSize(settings.batch_size, self.durations)
        # Who share the ready jobs when the queue runs dry (sql._SHARE): this pool's
        # children, as many as the master keeps when it forks this one (TTIN and
        # TTOU change that). Other hosts' are not known here.
        self.children = children or settings.effective_concurrency
        # The types this child claims: its master's served set (pool/served.py), in
        # every claim it makes (alone, with a commit, sent ahead). None: every type.
        self.types = tuple(sorted(served)) if served is not None else None
        self.group = Group(settings.commit_delay_ms / 1000)
        # Job types whose last job here never asked for its transaction (`execute`).
        self.dbless_types: set[str] = set()
        # Why a job settled outside its group failed, until its outcome is logged.
        self.reasons: dict[str, str] = {}
        # What the last job's transaction claimed for the loop (committed, reported to
        # the master): None when it did not try, and the loop claims by itself.
        self.next_jobs: list[Job] | None = None
        self.sent: _SentAhead | None = None  # a batch statement sent ahead, not yet read
        self.lease_s = settings.effective_stuck_timeout_s
        self.outage = Outage(f"worker {slot}", log)
        self.gate = gate
        self.paused = False  # the gate was closed at the last look
        self.claim_sent_at: float | None = None
        self.listener: Listener | None = Listener() if settings.listen else None
        self.ahead = AheadConnection(self.listener)  # pool/ahead.py: the same connection
        self.wake_r, self.wake_w = os.pipe()
        # The progress reporter's timer thread writes to the pipe too, and a write of
        # a group's messages may be longer than PIPE_BUF: one writer at a time.
        self.send_lock = threading.Lock()
        self.progress = ProgressReporter(self.send_quiet)

    # -- life ----------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        random.seed()
        if not lifeline.die_with_parent(self.master_pid):
            return EXIT_OK
        set_title(worker_title(self.slot))
        failure = self.boot()
        if failure is not None:
            log.error("worker %d could not boot: %s", self.slot, failure)
            self.send(protocol.BootFailed(failure))
            return EXIT_BOOT_FAILURE
        self.send(protocol.Ready(self.worker_id))
        try:
            self.loop()
        except Abandon:
            pass
        except BrokenPipeError:  # the master is gone; PDEATHSIG may be on its way
            return EXIT_OK
        finally:
            self.group.close()
            self.ahead.close()  # and the listener's, when it is the same
            if self.listener is not None:
                self.listener.close()
        return EXIT_ABORTED if self.abandoning else EXIT_OK

    def boot(self) -> str | None:
        """Connect and load the handlers; the reason the child cannot work, or None."""
        # A fresh engine for this pid (the inherited pool is dropped unclosed), bound
        # to the URL the master resolved: later get_engine() calls return it.
        db.get_engine(self.database_url)
        job_progress.set_reporter(self.progress)
        try:
            registry.load_handler_modules(self.settings.handlers)
        except ConfigurationError as exc:
            return str(exc)
        return self.probe_database()

    def install_signals(self) -> None:
        # Whatever the master installed must not run here; the wake-up pipe makes a
        # TERM interrupt the wait for the next poll at once.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGQUIT, self._on_quit)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # The master blocked these around the fork so none is lost before now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, protocol.POOL_SIGNALS)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _on_quit(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.abandoning = True
        # Raise only into handler code: anywhere else the loop sees the flag, so a
        # claim that committed is still reported before the child exits.
        if self.in_handler:
            raise Abandon()

    def probe_database(self) -> str | None:
        try:
            with bounded(STATEMENT_BOUND_S), db.connect() as conn:
                conn.execute(sql.PROBE)
                # A missing grant would fail a job at random later, in a loop:
                # name every one now, and the master stops with exit 3.
                role, lacking = grants.missing_worker_grants(
                    conn, demo=migrate.demo_installed(conn))
            if lacking:
                return (f"the database role {role!r} lacks grants the worker needs "
                        f"(see the least-privileged role in docs/operations.md): {'; '.join(lacking)}")
        except PermissionDenied as exc:
            return f"the database refused the worker: {exc}"
        except DatabaseUnavailable as exc:
            if _refused(exc):
                return f"the database refused the worker: {_first_line(exc)}"
            self.outage.failed(exc)  # restarting, say: the loop will wait for it
        except DBAPIError as exc:  # reachable, but no job table, or no right to it
            reason = _first_line(exc.orig or exc)
            hint = "; run `skiplock migrate` first" if "does not exist" in reason else ""
            return f"the database refused the worker: {reason}{hint}"
        return None

    def should_stop(self) -> bool:
        return self.stopping or not lifeline.parent_alive(self.master_pid)

    # -- the loop ------------------------------------------------------------

    def loop(self) -> None:
        while True:
            jobs, self.next_jobs = self.next_jobs, None
            if self.should_stop():
                if jobs:  # claimed with the last job: run_batch gives them back unrun
                    self.run_batch(jobs)
                return
            if jobs is None:
                if not self.outage.ready():
                    self.wait(self.outage.retry_at - time.monotonic())
                    continue
                if not self.may_claim():
                    self.wait(self.settings.poll_min_s)
                    continue
                try:
                    with bounded(STATEMENT_BOUND_S):
                        jobs = self.claim_batch()
                except Exception as exc:
                    if faults.classify(exc) is None:
                        raise
                    self.outage.failed(exc)
                    continue
                self.outage.succeeded()
                self.take(jobs)
            if not jobs:
                set_title(worker_title(self.slot))
                self.wait(self.poll.after_empty())
                continue
            self.run_batch(jobs)
            # With jobs claimed for the next round the child decided not to recycle
            # before it claimed them (claim_with_completion), and keeps to that.
            reason = None if self.next_jobs else self.recycle_reason()
            if reason is not None:
                log.info("worker %d recycling: %s", self.slot, reason)
                self.send(protocol.Exiting(reason))
                return

    def may_claim(self) -> bool:
        """Whether the master keeps leases now (log once when that changes)."""
        is_open = self.gate is None or self.gate.is_open()
        if is_open == self.paused:
            self.paused = not is_open
            if self.paused:
                log.warning("worker %d: not claiming: its master cannot renew leases now",
                            self.slot)
            else:
                log.warning("worker %d: claiming again", self.slot)
        return is_open

    def claim_batch(self, conn: Connection | None = None) -> list[Job]:
        """Claim the next batch, in `conn` (a job's transaction, not yet committed) or alone.

        Nothing is held until the claim commits: the caller hands the jobs to `take`
        only then."""
        self.claim_sent_at = time.monotonic()
        return claim(self.worker_id, limit=self.claim_size.limit(), types=self.types,
                     conn=conn, children=self.children)

    def take(self, jobs: list[Job], before: list[protocol.Message] | None = None) -> None:
        """A committed claim: size the next bite, and tell the master what to heartbeat
        (after `before`, in the same write)."""
        self.claim_size.after_claim(len(jobs))
        messages = list(before or [])
        if jobs:
            self.poll.reset()
            messages.append(protocol.Claimed([(j.id, self.worker_id, j.attempts) for j in jobs],
                                             sent_at=self.claim_sent_at))
        self.send(*messages)

    def claim_with_completion(self, conn: Connection) -> list[Job] | None:
        """Claim the next batch in the transaction that completes the last job of this one.

        Each commit is a WAL flush: with `python -m bench claim` claim + complete cost
        about 1.6 ms per job, about 0.35 ms of it per flush, so a busy child that
        claims in its own transaction pays two flushes per job, and one this way.
        None when the child must not take more work: it is stopping (TERM drains
        and QUIT abandons: neither claims anything new), or it recycles after this
        job; the loop then does what it would have done. The claim runs behind a
        savepoint: one that raises is rolled back alone, and the group's completed
        jobs still commit (the loop claims again by itself). The group's jobs are
        all counted in `jobs_done` by now.
        """
        limit = self.claim_limit()
        if not limit:
            return None
        try:
            self.claim_sent_at = time.monotonic()
            return claim(self.worker_id, limit=limit, types=self.types, conn=conn,
                         savepoint=True, children=self.children)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            if conn.invalidated:
                raise  # the connection is gone: the completion cannot commit either
            log.warning("worker %d: claiming the next jobs with the completion failed (%s); "
                        "the completion commits alone", self.slot, describe_exception(exc))
            with db.translate_errors():
                conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {sql.CLAIM_SAVEPOINT}")
            return None

    def claim_limit(self, after: int = 0) -> int:
        """How many jobs to claim with a commit: 0 when the child must not take more
        work (it stops, recycles after this group and `after` more jobs, or its master
        cannot keep leases)."""
        if (self.should_stop() or self.recycle_reason(after) is not None
                or not self.may_claim()):
            return 0
        return self.claim_size.limit()

    def run_batch(self, jobs: list[Job]) -> None:
        prepared = [self.prepare(job) for job in jobs]
        for index, job in enumerate(jobs):
            if self.should_stop():
                self.commit_group()
                for left in jobs[index:]:
                    outcome = self.settle(left, lambda j=left: _released(
                        release(j, "worker stopped before it started the job")))
                    self.send(protocol.Finished(left.id, outcome, 0.0, left.type))
                return
            if index == len(jobs) - 1 and self.send_ahead(job):
                pass  # what waited in the group went with the claim of the next batch
            elif self.group.due(self.durations.expected(job.type)):
                self.commit_group()
            self.run_job(job, *prepared[index])
        if self.sent is not None:
            self.collect_ahead()
        else:
            self.commit_group(claim_next=True)

    def send_ahead(self, last: Job) -> bool:
        """Before the batch's `last` job: send the completions waiting in the group with
        the claim of the next batch, to run on the server while `last` runs
        (pool/ahead.py). False when the batch ends the usual way: the queue did not
        look deep, the group wrote to the database, `last` may run long, or the
        child takes no more work after it."""
        expected = self.durations.expected(last.type)
        if (expected is None or expected > AHEAD_MAX_S or not self.claim_size.last_full
                or not self.group.writes_nothing() or not self.outage.ready()):
            return False
        limit = self.claim_limit(after=1)
        if not limit:
            return False
        try:
            with bounded(STATEMENT_BOUND_S):
                self.ahead.connect()
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            self.outage.failed(exc)
            return False
        outcomes = self.group.take_all()  # nothing was sent in its transaction
        completions = [(o.job, o.result) for o in outcomes]
        sent_at = time.monotonic()
        try:
            with bounded(STATEMENT_BOUND_S):
                self.ahead.send(*complete_and_claim_statement(completions, self.worker_id,
                                                              limit, self.children,
                                                              self.types))
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            # It may have reached the server: settled as a commit whose answer was lost.
            self.settle_aborted(GroupAborted(outcomes, set(), exc), claimed=True,
                                keep=[last.id])
            return True
        self.sent = _SentAhead(outcomes, completions, sent_at)
        return True

    def collect_ahead(self) -> None:
        """After the batch's last job: read the answer of the statement sent ahead,
        report it, and keep the next batch for the loop. The last job's own outcome
        waits in the group for the next batch's statement when that batch may carry
        it (it wrote nothing and there is a next batch); else it commits now."""
        sent, self.sent = self.sent, None
        assert sent is not None
        next_jobs: list[Job] | None = None
        try:
            try:
                with bounded(STATEMENT_BOUND_S):
                    names, rows = self.ahead.receive()
                done, next_jobs = complete_and_claim_result(sent.completions, names, rows)
            except SQLAlchemyError as exc:  # the server answered: nothing of it committed
                done = self.complete_without_claim(sent.completions, exc)
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            self.settle_aborted(GroupAborted(sent.outcomes, set(), exc), claimed=True,
                                keep=[o.job.id for o in self.group.outcomes])
        else:
            for o in sent.outcomes:
                o.outcome = "completed" if o.job.id in done else "lost"
            if next_jobs and time.monotonic() - sent.sent_at > stale_after_s(self.lease_s):
                self.give_back_stale(next_jobs, time.monotonic() - sent.sent_at)
                next_jobs = None
            self.claim_sent_at = sent.sent_at
            self.report(sent.outcomes, before_claim=next_jobs)
            if next_jobs:
                self.next_jobs = next_jobs
        if self.next_jobs and self.group.writes_nothing():
            return
        self.commit_group(claim_next=not self.next_jobs)

    def give_back_stale(self, jobs: list[Job], age_s: float) -> None:
        """Jobs claimed ahead whose answer came too late to start them safely (the
        batch's last job ran long): back to the queue, unrun and uncharged. The
        master never heard of them."""
        reason = (f"claimed ahead {age_s:.1f} s before the worker could start it, too close "
                  "to the end of its lease; never started")
        log.warning("worker %d: %d job(s) claimed ahead given back: %s", self.slot,
                    len(jobs), reason)
        for job in jobs:
            self.settle(job, lambda j=job: _released(release(j, reason)))

    def wait(self, timeout: float) -> None:
        """Sleep until the timeout, a notification, or a signal (TERM wakes us at once)."""
        fds = [self.wake_r]
        if self.listener is not None:
            if self.listener.fileno() is None and self.outage.ready():
                try:
                    self.listener.connect()
                except Exception as exc:  # any driver error: poll alone meanwhile
                    self.outage.failed(exc)
            listen_fd = self.listener.fileno()
            if listen_fd is not None:
                fds.append(listen_fd)
        # Never longer than the longest poll, so a dead master is noticed by getppid().
        timeout = max(0.0, min(timeout, self.settings.poll_max_s))
        readable, _, _ = select.select(fds, [], [], timeout)
        if self.wake_r in readable:
            os.read(self.wake_r, 512)
        if self.listener is not None and self.listener.fileno() in readable:
            self.listener.consume()

    def recycle_reason(self, after: int = 0) -> str | None:
        """Why the child should recycle once it has finished `after` more jobs, or None."""
        limit = self.settings.max_jobs_per_child
        done = self.jobs_done + after
        if limit and done >= limit:
            return f"ran {done} jobs (--max-jobs-per-child {limit})"
        mb_limit = self.settings.max_memory_per_child_mb
        if mb_limit:
            rss = resident_mb()
            if rss > mb_limit:
                return f"resident memory {rss:.0f} MiB over --max-memory-per-child {mb_limit}"
        return None

    # -- one job ------------------------------------------------------------

    def prepare(self, job: Job) -> tuple[Registration | None, protocol.PreparedStarted]:
        """The job's handler and its `started` but for the times, looked up and built
        with its batch's others, while that code is hot."""
        registration = registry.get_registration(job.type)
        timeout_s = (registration.timeout_s if registration else None) or self.settings.job_timeout_s
        return registration, protocol.PreparedStarted(protocol.Started(
            job.id, job.type, self.worker_id, job.attempts, job.max_attempts, timeout_s))

    def run_job(self, job: Job, registration: Registration | None,
                start: protocol.PreparedStarted) -> None:
        # Quiet: the master reads it at its next turn (pool/protocol.py, two pipes).
        with self.send_lock:
            self.sender.send_started(start, time.monotonic(), time.time())
        set_title(worker_title(self.slot, job.type, job.id))
        self.progress.start(job.id)
        if log.isEnabledFor(logging.INFO):  # nothing is formatted when it is off
            log.info("job %s %s started (attempt %d/%d)", job.type, job.id, job.attempts,
                     job.max_attempts, extra=_extra(job, self.worker_id))
        started = time.monotonic()
        outcome = self.execute(job, registration, started)
        duration = time.monotonic() - started
        self.jobs_done += 1
        self.durations.observe(job.type, duration)
        if outcome is not None:  # else it waits in the group for the commit
            self.report([Outcome(job, duration, 0.0, outcome=outcome)])

    def report(self, outcomes: list[Outcome], before_claim: list[Job] | None = None) -> None:
        """Tell the master how these jobs ended (committed), in one write; with
        `before_claim`, the claim of the next batch rides in the same write."""
        messages: list[protocol.Message] = [
            protocol.Finished(o.job.id, o.outcome, o.duration_s, o.job.type) for o in outcomes]
        for o in outcomes:
            # Why it failed, from the job's own outcome or from the settlement that
            # wrote its lastError (`fail`, `interrupted`): every failure line says it.
            reason = (self.reasons.pop(o.job.id, None) if self.reasons else None) or o.error
            failed = o.outcome in _FAILED
            if failed or log.isEnabledFor(logging.INFO):  # nothing formatted when it is off
                log.log(logging.WARNING if failed else logging.INFO,
                        "job %s %s %s in %.0f ms%s", o.job.type, o.job.id,
                        o.outcome.replace("_", "-"), o.duration_s * 1000,
                        f": {log_reason(reason)}" if reason is not None and (
                            failed or o.outcome == "released") else "",
                        extra={**_extra(o.job, self.worker_id), "outcome": o.outcome,
                               "duration_ms": round(o.duration_s * 1000, 1)})
        if before_claim is not None:
            self.take(before_claim, before=messages)
        else:
            self.send(*messages)

    def commit_group(self, claim_next: bool = False) -> None:
        """Commit the jobs that wait in the group; with `claim_next`, claim the next
        batch in the same transaction (claim_with_completion) for the loop."""
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
                self.claim_with_completion if claim_next else None)
        except GroupAborted as exc:
            self.settle_aborted(exc, claimed=claim_next)
            return
        # Committed: report the claim at once, before anything else can happen.
        # The master heartbeats only what it was told; a claim it heard of before
        # the commit would look lost to it, and so would a completion it heard of
        # before the commit. A SIGKILL between the commit and this write leaves
        # rows held by this worker that the master does not know of: when it reaps
        # the child it gives back, uncharged, every job of the child's but the
        # running one (sql.RELEASE_UNSTARTED), and so also the group's jobs that
        # waited for a commit that never came. The loop's own claim has the same
        # window, and the same remedy.
        self.report(outcomes, before_claim=next_jobs)
        if next_jobs is not None:
            self.next_jobs = next_jobs

    def commit_alone(self, claim_next: bool) -> None:
        """The group's jobs completed without touching the database: their completions
        (and the claim of the next batch) commit by themselves, in one statement. A
        statement the server refused (the claim's part, say) is retried as the
        completions alone; what cannot commit at all is settled job by job."""
        outcomes = self.group.take_all()  # nothing was sent in its transaction
        completions = [(o.job, o.result) for o in outcomes]
        limit = self.claim_limit() if claim_next else 0
        next_jobs: list[Job] | None = None
        try:
            try:
                with db.translate_errors():
                    if limit:
                        self.claim_sent_at = time.monotonic()
                        done, next_jobs = complete_and_claim(completions, self.worker_id, limit,
                                                             self.children, self.types)
                    else:
                        done = complete_many(completions)
            except SQLAlchemyError as exc:  # the server answered: no claim this time
                next_jobs = None
                done = self.complete_without_claim(completions, exc)
        except Exception as exc:
            if faults.classify(exc) is None:
                raise
            self.settle_aborted(GroupAborted(outcomes, set(), exc), claimed=bool(limit))
            return
        for o in outcomes:
            o.outcome = "completed" if o.job.id in done else "lost"
        self.report(outcomes, before_claim=next_jobs)
        if next_jobs is not None:
            self.next_jobs = next_jobs

    def complete_without_claim(self, completions: list[tuple[Job, Any]],
                               refused: SQLAlchemyError) -> set[str]:
        """The server refused the statement that completes and claims (nothing of it
        committed): the completions commit by themselves; the loop claims later."""
        log.warning("worker %d: completing with the claim of the next jobs failed (%s); "
                    "the completions commit alone", self.slot, describe_exception(refused))
        with bounded(STATEMENT_BOUND_S), db.translate_errors():
            return complete_many(completions)

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
            reason = f"{what}: {_first_line(cause.__cause__ or cause)}"
        log.warning("worker %d: %d finished job(s) not committed (%s)", self.slot,
                    len(aborted.outcomes) - len(aborted.lost), reason)
        if claimed and lost_connection:
            # A commit whose answer was lost may have committed a claim of the next
            # jobs that nobody knows of: give back, uncharged, whatever this worker
            # holds and never started (nothing else of its batch is left but `keep`).
            ran = [o.job.id for o in aborted.outcomes] + list(keep or ())
            self.settle(None, lambda: str(release_unstarted(
                self.worker_id, ran, "claimed by a commit whose answer was lost; "
                "never started")))
        completed = [o for o in aborted.outcomes
                     if o.job.id not in aborted.lost and o.error is None]
        for o in aborted.outcomes:
            if o.job.id in aborted.lost:
                log.warning("job %s %s was no longer held by this worker (rescued elsewhere); "
                            "its result was discarded", o.job.type, o.job.id)
                o.outcome = "lost"
            elif o.error is not None:
                o.outcome = self.fail(o.job, o.error, retry=o.retry)
            elif cause is None:
                # Rolled back for another job's sake: not this one's doing, no attempt.
                o.outcome = self.settle(o.job, lambda j=o.job: _released(release(j, reason)))
            elif lost_connection or len(completed) > 1:
                # Cut short by the database, or by a commit that the server refused
                # for one of several jobs that cannot be told apart: an interruption,
                # free only a few times (queue_core/accounting.py), so even a job that
                # always spoils its group's commit ends.
                o.outcome = self.interrupted(o.job, reason)
            else:
                # The server refused this one job's commit: an attempt, or such a job
                # would come back forever (docs/lessons.md, poison jobs).
                o.outcome = self.fail(o.job, reason, retry=True)
        self.report(aborted.outcomes)

    def abandon_group(self, cause: BaseException) -> None:
        """The group's connection broke under a job: what waited in it is gone too."""
        waiting = self.group.take_all()
        if waiting:
            self.settle_aborted(GroupAborted(waiting, set(), cause))

    def execute(self, job: Job, registration: Registration | None, started: float) -> str | None:
        """Run the job to an end: its outcome, or None when it waits in the group for
        the commit (pool/group_commit.py), which then also claims the next batch.

        Only skiplock's own statements (opening the transaction, its savepoint, the
        completion, the claim, the commit) are translated into skiplock's errors.
        Whatever the handler raises is the handler's, reported as such, even a
        driver error on another database; the one thing read from it is whether the
        job's own connection died under it (queue_core/accounting.py: an
        interruption)."""
        if job.decode_error is not None:
            return self.fail(job, job.decode_error, retry=False)
        if job.cancel_requested_at is not None:  # cancelled while it waited (queue_core/cancel.py)
            return self.settle(job, lambda: "cancelled" if end_cancelled(job, started=False)
                               else "lost")
        try:
            payload = validate_payload(job.type, job.payload)
        except InvalidPayload as exc:
            return self.fail(job, str(exc), retry=False)
        if registration is None:
            return self.fail(job, f"no handler registered for job type {job.type}", retry=False)
        try:
            # The job's transaction is opened before its handler runs, so that a
            # database that cannot be reached costs the job nothing: the handler
            # would have nowhere to write. Not for a type whose last job here never
            # used it: its group then takes no connection out of the engine's pool
            # and puts none back, about 0.4 ms of cold code per batch that a
            # CPU-bound job pays for (docs/benchmarks.md). If such a job does ask,
            # the transaction opens then, and a failure to open it is an
            # interruption (`handler_raised`). Checked once per group, not per job.
            if not self.group.open() and job.type not in self.dbless_types:
                with db.translate_errors():
                    self.group.connection()
        except DatabaseUnavailable as exc:  # the handler never ran: nothing to charge
            self.abandon_group(exc)
            self.outage.failed(exc)
            reason = f"worker could not open the job's transaction: {_first_line(exc)}"
            return self.settle(job, lambda: _released(release(job, reason)))
        scope = JobScope(self.group)
        try:
            return self.run_in_group(job, registration, payload, scope, started)
        except _Failed as exc:
            if exc.result.snooze_s is not None:  # queue_core/snooze.py
                self.rollback_scope(scope)
                delay, bound = exc.result.snooze_s, registration.max_snoozes
                outcome = self.settle(job, lambda: snooze(job, delay, bound))
                if outcome == "dead_lettered":  # the lastError queue_core/sql.py SNOOZE writes
                    self.reasons[job.id] = f"snoozed {bound} times, the limit of its type"
                return outcome
            return self.fail_in_group(job, scope, started,
                                      exc.result.error or "handler reported failure",
                                      retry=exc.result.should_retry)
        finally:
            if scope.savepoint is None:
                self.dbless_types.add(job.type)
            else:
                self.dbless_types.discard(job.type)

    def run_in_group(self, job: Job, registration: Registration, payload: dict[str, Any],
                     scope: JobScope, started: float) -> str | None:
        """The handler, in its savepoint of the group's transaction; its completion is
        written and committed with the group's. An outcome string when the handler
        raised or its savepoint could not be kept; None when the job waits in the group."""
        # The handler's writes and the completion commit together or not at all
        # (docs/internals.md, the job's transaction).
        try:
            with db.bind_job_connection(scope):
                self.in_handler = True
                try:
                    result = registration.fn(payload, job.id)
                finally:
                    self.in_handler = False
        except Exception as exc:
            return self.handler_raised(job, scope, started, exc)
        if not isinstance(result, JobResult):
            raise _Failed(JobResult(False, error=f"handler of {job.type} returned "
                                                 f"{type(result).__name__}, not a JobResult"))
        if not result.success:
            raise _Failed(result)
        if scope.savepoint is not None:  # else the job never touched its transaction
            try:
                with db.translate_errors():
                    scope.release()
            except DatabaseUnavailable as exc:
                if not self.group.broken() and _server_answered(exc):
                    # The server answered: a statement in the job's transaction failed (a
                    # lock or statement timeout the handler set, a deadlock). That is an
                    # attempt, or such a job would come back forever without accounting
                    # (docs/lessons.md, poison jobs).
                    log.warning("job %s %s: %s", job.type, job.id, _first_line(exc),
                                extra={"job_id": job.id, "job_type": job.type})
                    return self.fail_in_group(job, scope, started,
                                              _first_line(exc.__cause__ or exc), retry=True)
                self.abandon_group(exc)
                return self.interrupted(job, "the job's database connection was lost before "
                                             f"it committed: {_first_line(exc.__cause__ or exc)}")
            except SQLAlchemyError as exc:
                # Our statement was refused in a transaction the handler left aborted
                # (it caught an error of its own and returned).
                return self.fail_in_group(job, scope, started, f"the job's transaction could not "
                                          f"commit: {describe_exception(exc)}", retry=True)
        now = time.monotonic()
        self.group.add(Outcome(job, now - started, now, result=result.data))
        return None

    def handler_raised(self, job: Job, scope: JobScope, started: float,
                       exc: Exception) -> str | None:
        # The job's own connection (the group's) died under the handler, or a skiplock
        # call of the handler's lost its connection to skiplock's database (only
        # skiplock's own statements raise DatabaseUnavailable): not necessarily the
        # handler's fault (a restart, a failover), so an interruption, which is free
        # only a few times.
        own = self.group.broken()
        theirs = isinstance(exc, DatabaseUnavailable) and _connection_lost(exc)
        if own or theirs:
            if own:
                self.abandon_group(exc)
            else:
                self.rollback_scope(scope)
            which = "the job's database connection" if own else \
                "a connection of the handler's to skiplock's database"
            return self.interrupted(job, f"{which} was lost while the handler ran: "
                                         f"{describe_exception(exc)}")
        log.warning("job %s %s raised %s", job.type, job.id, type(exc).__name__,
                    exc_info=True, extra={"job_id": job.id, "job_type": job.type})
        return self.fail_in_group(job, scope, started, describe_exception(exc), retry=True)

    def rollback_scope(self, scope: JobScope) -> bool:
        """Roll the job's writes back to its savepoint; False (and the group settled
        job by job) when even that failed: the group's transaction cannot commit."""
        try:
            with db.translate_errors():
                scope.rollback()
        except Exception as exc:
            self.abandon_group(exc)
            return False
        return True

    def fail_in_group(self, job: Job, scope: JobScope, started: float, error: str, *,
                      retry: bool) -> str | None:
        """Roll the job's writes back to its savepoint; it is failed in the group's
        transaction. When even that rollback fails the group cannot commit: its jobs
        are settled one by one, and this one is failed on its own."""
        if not self.rollback_scope(scope):
            return self.fail(job, error, retry=retry)
        now = time.monotonic()
        self.group.add(Outcome(job, now - started, now, error=error, retry=retry))
        return None

    def interrupted(self, job: Job, reason: str) -> str:
        log.warning("job %s %s interrupted: %s", job.type, job.id, log_reason(reason),
                    extra={"job_id": job.id, "job_type": job.type})
        self.reasons[job.id] = reason
        return self.settle(job, lambda: _interrupt_outcome(interrupt(job, reason)))

    def fail(self, job: Job, error: str, *, retry: bool) -> str:
        self.reasons[job.id] = error
        return self.settle(job, lambda: _FAIL_OUTCOMES[fail(job, error, retry=retry)])

    def settle(self, job: Job | None, change: Any) -> str:
        """Run a fenced state change, waiting out a database outage (the master keeps
        the job's heartbeat meanwhile)."""
        while True:
            if self.outage.ready():
                try:
                    with bounded(STATEMENT_BOUND_S):
                        outcome: str = change()
                except Exception as exc:
                    if faults.classify(exc) is None:
                        raise
                    self.outage.failed(exc)
                else:
                    self.outage.succeeded()
                    return outcome
            if not lifeline.parent_alive(self.master_pid):
                raise BrokenPipeError("master is gone")
            self.wait(self.outage.retry_at - time.monotonic())

    def send(self, *messages: protocol.Message) -> None:
        if messages:
            with self.send_lock:
                self.sender.send(*messages)

    def send_quiet(self, message: protocol.Message) -> None:
        with self.send_lock:
            self.sender.send_quiet(message)


def _extra(job: Job, worker_id: str) -> dict[str, Any]:
    return {"job_id": job.id, "job_type": job.type, "attempt": job.attempts,
            "worker": worker_id}


def _interrupt_outcome(outcome: str | None) -> str:
    return outcome or "lost"


def _released(done: bool) -> str:
    return "released" if done else "lost"


def _connection_lost(exc: DatabaseUnavailable) -> bool:
    """Whether the connection behind `exc` went away (as opposed to a statement the
    server refused, a timeout, say: queue_core/faults.py decides)."""
    return not _server_answered(exc)


def _server_answered(exc: DatabaseUnavailable) -> bool:
    """Whether the server judged the job's statement (a timeout, a deadlock), as opposed
    to a connection that went away with the job's transaction (faults.py decides)."""
    fault = faults.classify(exc)
    return fault is not None and fault.server_answered


def _refused(exc: BaseException) -> bool:
    """A server that refuses us for good (wrong password, no such database or role, no
    right), as opposed to one that is restarting: a boot failure, not an outage."""
    return faults.classify(exc) == faults.Fault.REJECTED


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def resident_mb() -> float:
    """This process's resident memory in MiB (Linux's /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
