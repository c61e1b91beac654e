"""A worker child: claim a job, run its handler, settle it, again.

A busy child claims its next batch in the transaction that completes the last
job of the current one (`claim_with_completion`): one commit per job, not two.

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

import contextlib
import logging
import os
import random
import select
import signal
import time
from types import FrameType
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from skiplock.handlers import registry
from skiplock.handlers.registry import JobResult, Registration
from skiplock.pool import lifeline, protocol
from skiplock.pool.claim_gate import ClaimGate
from skiplock.pool.listener import Listener
from skiplock.pool.outage import Outage
from skiplock.pool.postmortem import EXIT_ABORTED, EXIT_BOOT_FAILURE, EXIT_OK
from skiplock.pool.proctitle import set_title, worker_title
from skiplock.pool.progress_reporter import ProgressReporter
from skiplock.queue_core import (
    Job,
    claim,
    complete,
    db,
    fail,
    faults,
    grants,
    job_progress,
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
from skiplock.queue_core.lifecycle import interrupt, release_unstarted
from skiplock.queue_core.payloads import validate_payload
from skiplock.queue_core.snooze import snooze
from skiplock.queue_core.storable import describe_exception

log = logging.getLogger("skiplock.worker")

_FAIL_OUTCOMES = {"PENDING": "retried", "DEAD_LETTER": "dead_lettered", None: "lost"}

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


class _Lost(Exception):
    """`complete` found the job no longer ours: roll the handler's writes back."""


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
        database_url: str, gate: ClaimGate | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.slot = slot
        self.worker_id = worker_id
        self.master_pid = master_pid
        self.fd = fd
        self.stopping = False
        self.abandoning = False
        self.in_handler = False
        self.jobs_done = 0
        self.poll = PollInterval(settings.poll_min_s, settings.poll_max_s, settings.poll_step_s)
        self.claim_limit = 1
        # What the last job's transaction claimed for the loop (committed, reported to
        # the master): None when it did not try, and the loop claims by itself.
        self.next_jobs: list[Job] | None = None
        self.outage = Outage(f"worker {slot}", log)
        self.gate = gate
        self.paused = False  # the gate was closed at the last look
        self.claim_sent_at: float | None = None
        self.listener: Listener | None = Listener() if settings.listen else None
        self.wake_r, self.wake_w = os.pipe()
        self.progress = ProgressReporter(self.send)

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
                role, lacking = grants.missing_worker_grants(conn)
            if lacking:
                return (f"the database role {role!r} lacks grants the worker needs "
                        f"(see the README's least-privileged role): {'; '.join(lacking)}")
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
        return claim(self.worker_id, limit=self.claim_limit, conn=conn)

    def take(self, jobs: list[Job]) -> None:
        """A committed claim: size the next bite, and tell the master what to heartbeat."""
        if not jobs:
            self.claim_limit = 1
            return
        self.poll.reset()
        # A full batch means a deep queue: take bigger bites until it runs dry.
        self.claim_limit = self.settings.batch_size if len(jobs) >= self.claim_limit else 1
        self.send(protocol.Claimed([(j.id, self.worker_id, j.attempts) for j in jobs],
                                   sent_at=self.claim_sent_at))

    def claim_with_completion(self, conn: Connection) -> list[Job] | None:
        """Claim the next batch in the transaction that completes the last job of this one.

        Each commit is a WAL flush: with `python -m bench claim` claim + complete cost
        about 1.6 ms per job, about 0.35 ms of it per flush, so a busy child that
        claims in its own transaction pays two flushes per job, and one this way.
        None when the child must not take more work: it is stopping (TERM drains
        and QUIT abandons: neither claims anything new), or it recycles after this
        job; the loop then does what it would have done. The claim runs behind a
        savepoint: one that raises is rolled back alone, and the completed job
        still commits (the loop claims again by itself).
        """
        if self.should_stop() or self.recycle_reason(after=1) is not None or not self.may_claim():
            return None
        try:
            return claim(self.worker_id, limit=self.claim_limit, conn=conn, savepoint=True)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            if conn.invalidated:
                raise  # the connection is gone: the completion cannot commit either
            log.warning("worker %d: claiming the next jobs with the completion failed (%s); "
                        "the completion commits alone", self.slot, describe_exception(exc))
            with db.translate_errors():
                conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {sql.CLAIM_SAVEPOINT}")
            return None

    def run_batch(self, jobs: list[Job]) -> None:
        for index, job in enumerate(jobs):
            if self.should_stop():
                for left in jobs[index:]:
                    outcome = self.settle(left, lambda j=left: _released(
                        release(j, "worker stopped before it started the job")))
                    self.send(protocol.Finished(left.id, outcome, 0.0))
                return
            self.run_job(job, last=index == len(jobs) - 1)

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

    def run_job(self, job: Job, *, last: bool = False) -> None:
        registration = registry.get_registration(job.type)
        timeout_s = (registration.timeout_s if registration else None) or self.settings.job_timeout_s
        self.send(protocol.Started(job.id, job.type, self.worker_id, job.attempts,
                                   job.max_attempts, timeout_s))
        set_title(worker_title(self.slot, job.type, job.id))
        self.progress.start(job.id)
        extra: dict[str, Any] = {"job_id": job.id, "job_type": job.type,
                                 "attempt": job.attempts, "worker": self.worker_id}
        log.info("job %s %s started (attempt %d/%d)", job.type, job.id, job.attempts,
                 job.max_attempts, extra=extra)
        started = time.monotonic()
        outcome = self.execute(job, registration, claim_next=last)
        duration = time.monotonic() - started
        self.jobs_done += 1
        self.send(protocol.Finished(job.id, outcome, duration))
        log.info("job %s %s %s in %.0f ms", job.type, job.id, outcome.replace("_", "-"),
                 duration * 1000, extra={**extra, "duration_ms": round(duration * 1000, 1),
                                         "outcome": outcome})
        set_title(worker_title(self.slot))

    def execute(self, job: Job, registration: Registration | None, *,
                claim_next: bool = False) -> str:
        """Run the job to an end; with `claim_next`, a completion also claims the next
        batch in its transaction (claim_with_completion) for the loop.

        Only skiplock's own statements (opening the transaction, the completion, the
        claim, the commit) are translated into skiplock's errors. Whatever the
        handler raises is the handler's, reported as such, even a driver error on
        another database; the one thing read from it is whether the job's own
        connection died under it (queue_core/accounting.py: an interruption)."""
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
            with db.translate_errors():
                conn = db.get_engine().connect()
        except DatabaseUnavailable as exc:  # the handler never ran: nothing to charge
            self.outage.failed(exc)
            reason = f"worker could not open the job's transaction: {_first_line(exc)}"
            return self.settle(job, lambda: _released(release(job, reason)))
        next_jobs: list[Job] | None = None
        lost = False
        try:
            try:
                outcome = self.run_in_transaction(job, registration, payload, conn, claim_next)
            finally:
                # Settle with the job's transaction closed (its locks gone), but
                # note first whether its connection died.
                lost = conn.invalidated
                with contextlib.suppress(Exception):  # closing a dead connection may raise
                    conn.close()
            if isinstance(outcome, list):
                next_jobs = outcome
            elif outcome is not None:
                return outcome
        except _Lost:
            log.warning("job %s %s was no longer held by this worker (rescued elsewhere); "
                        "its result was discarded", job.type, job.id)
            return "lost"
        except _Failed as exc:
            if exc.result.snooze_s is not None:  # queue_core/snooze.py
                delay, bound = exc.result.snooze_s, registration.max_snoozes
                return self.settle(job, lambda: snooze(job, delay, bound))
            return self.fail(job, exc.result.error or "handler reported failure",
                             retry=exc.result.should_retry)
        except DatabaseUnavailable as exc:
            if not lost and _server_answered(exc):
                # The server answered: a statement in the job's transaction failed (a
                # lock or statement timeout the handler set, a deadlock). That is an
                # attempt, or such a job would come back forever without accounting
                # (docs/lessons.md, poison jobs).
                log.warning("job %s %s: %s", job.type, job.id, _first_line(exc),
                            extra={"job_id": job.id, "job_type": job.type})
                return self.fail(job, _first_line(exc.__cause__ or exc), retry=True)
            outcome = self.interrupted(job, "the job's database connection was lost before "
                                            f"it committed: {_first_line(exc.__cause__ or exc)}")
            if claim_next:
                # A commit whose answer was lost may have committed a claim of the
                # next jobs that nobody knows of: give back, uncharged, whatever this
                # worker holds and never started (nothing else of its batch is left).
                self.settle(job, lambda: str(release_unstarted(
                    self.worker_id, [job.id], "claimed by a commit whose answer was lost; "
                    "never started")))
            return outcome
        except SQLAlchemyError as exc:
            # Our statement was refused in a transaction the handler left aborted
            # (it caught an error of its own and returned).
            return self.fail(job, f"the job's transaction could not commit: "
                                  f"{describe_exception(exc)}", retry=True)
        if next_jobs is not None:
            # Committed: report the claim first, before anything else can happen.
            # The master heartbeats only what it was told; a claim it heard of before
            # the commit would look lost to it. A SIGKILL between the commit and this
            # write leaves rows held by this worker that the master does not know of:
            # when it reaps the child it gives back every job of the child's that
            # never started (sql.RELEASE_UNSTARTED), without charging them. The loop's
            # own claim has the same window, and the same remedy.
            self.take(next_jobs)
            self.next_jobs = next_jobs
        return "completed"

    def run_in_transaction(self, job: Job, registration: Registration, payload: dict[str, Any],
                           conn: Connection, claim_next: bool) -> str | list[Job] | None:
        """The job's transaction: the handler, then the completion (and the next claim),
        committed together. An outcome string when the handler raised; the jobs claimed
        with the completion, or None, when it committed."""
        with db.translate_errors():
            conn.begin()
        # The handler's writes and the completion commit together or not at all
        # (docs/internals.md, the job's transaction).
        try:
            with db.bind_job_connection(conn):
                self.in_handler = True
                try:
                    result = registration.fn(payload, job.id)
                finally:
                    self.in_handler = False
        except Exception as exc:
            return self.handler_raised(job, conn, exc)
        if not isinstance(result, JobResult):
            raise _Failed(JobResult(False, error=f"handler of {job.type} returned "
                                                 f"{type(result).__name__}, not a JobResult"))
        if not result.success:
            raise _Failed(result)
        if not complete(job, result.data, conn=conn):
            raise _Lost()  # rolls back: nothing was claimed either
        next_jobs = self.claim_with_completion(conn) if claim_next else None
        with db.translate_errors():
            conn.commit()
        return next_jobs

    def handler_raised(self, job: Job, conn: Connection, exc: Exception) -> str:
        # The job's own connection died under the handler, or a skiplock call of the
        # handler's lost its connection to skiplock's database (only skiplock's own
        # statements raise DatabaseUnavailable): not necessarily the handler's fault
        # (a restart, a failover), so an interruption, which is free only a few times.
        own = conn.invalidated or conn.closed
        theirs = isinstance(exc, DatabaseUnavailable) and _connection_lost(exc)
        with contextlib.suppress(Exception):
            conn.rollback()
        if own or theirs:
            which = "the job's database connection" if own else \
                "a connection of the handler's to skiplock's database"
            return self.interrupted(job, f"{which} was lost while the handler ran: "
                                         f"{describe_exception(exc)}")
        log.warning("job %s %s raised %s", job.type, job.id, type(exc).__name__,
                    exc_info=True, extra={"job_id": job.id, "job_type": job.type})
        return self.fail(job, describe_exception(exc), retry=True)

    def interrupted(self, job: Job, reason: str) -> str:
        log.warning("job %s %s interrupted: %s", job.type, job.id, reason,
                    extra={"job_id": job.id, "job_type": job.type})
        return self.settle(job, lambda: _interrupt_outcome(interrupt(job, reason)))

    def fail(self, job: Job, error: str, *, retry: bool) -> str:
        return self.settle(job, lambda: _FAIL_OUTCOMES[fail(job, error, retry=retry)])

    def settle(self, job: Job, change: Any) -> str:
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

    def send(self, message: protocol.Message) -> None:
        protocol.send(self.fd, message)


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
