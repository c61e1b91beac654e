"""A worker child's life: boot, claim, run a batch, again; stop when told.

The roles it plays live beside it, each in its own module:

- pool/producer.py: where the next jobs come from (a claim of its own, or one
  that rides with a commit), sized to the backlog, only while the master keeps
  leases;
- pool/executor.py: one job, from its `started` to a typed outcome;
- pool/completer.py: the group commit (pool/group_commit.py), and the
  settlement of whatever a commit could not do;
- pool/settler.py: fenced changes of a job outside its transaction, and the
  `finished` word to the master.

The master forks the child and calls `Child(...).run()`, whose return value
becomes the exit status. A child starts clean (docs/lessons.md, "A child starts
clean"): it resets the signal handlers it inherited, reseeds `random`, drops
the database pool it inherited and opens its own connections (no connection
crosses a fork), sets its title, and arranges to die with its master. It then
imports the handler modules named in the settings, so that the children the
master forks after a HUP load the new code.

The child settles only the jobs it ran to an end (completed, failed, lost). A
job it never finished because it died, was stopped, or timed out is settled by
the master, which learns from `waitpid` how the child ended. A database error
never ends a child: whatever its class (queue_core/database/faults.py), the child waits
it out with a back-off, as the master does, and it takes no new work while its
master cannot keep the leases (pool/claim_gate.py). Signals: TERM finishes the
running job and exits; QUIT abandons the job at once (the handler gets
`Abandon`, a BaseException, its transaction rolls back); INT is ignored, so
that Ctrl-C in a terminal drains gracefully through the master.
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
from types import FrameType

from sqlalchemy.exc import DBAPIError

from skiplock.handlers import registry
from skiplock.handlers.registry import Registration
from skiplock.pool import lifeline, protocol
from skiplock.pool.ahead import AheadConnection
from skiplock.pool.claim_gate import ClaimGate
from skiplock.pool.completer import Completer
from skiplock.pool.executor import Executor
from skiplock.pool.group_commit import Group, Outcome
from skiplock.pool.listener import Listener
from skiplock.pool.outage import Outage
from skiplock.pool.postmortem import EXIT_ABORTED, EXIT_BOOT_FAILURE, EXIT_OK
from skiplock.pool.proctitle import set_title, worker_title
from skiplock.pool.producer import PollInterval, Producer
from skiplock.pool.progress_reporter import CheckpointReporter, ProgressReporter
from skiplock.pool.settler import STATEMENT_BOUND_S, Settler, job_extra
from skiplock.queue_core import Job, sql, tracing
from skiplock.queue_core.config import Settings
from skiplock.queue_core.database import db, faults, grants, migrate
from skiplock.queue_core.database.bounds import bounded
from skiplock.queue_core.errors import ConfigurationError, DatabaseUnavailable, PermissionDenied
from skiplock.queue_core.features import checkpoints, job_progress, type_policies
from skiplock.queue_core.storable import first_line

log = logging.getLogger("skiplock.worker")

__all__ = ["STATEMENT_BOUND_S", "Abandon", "Child", "PollInterval", "resident_mb"]


class Abandon(BaseException):
    """The master asked this child to drop its job now (SIGQUIT)."""


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
        self.sender = protocol.Sender(fd, quiet_fd)
        self.stopping = False
        self.abandoning = False
        self.jobs_done = 0
        self.outage = Outage(f"worker {slot}", log)
        self.listener: Listener | None = Listener() if settings.listen else None
        self.wake_r, self.wake_w = os.pipe()
        # The reporters' and the completer's timer threads write to the pipe too, and a
        # write of a group's messages (or a checkpoint) may be longer than PIPE_BUF:
        # one writer at a time.
        self.send_lock = threading.Lock()
        self.progress = ProgressReporter(self.send_quiet)
        self.checkpoints = CheckpointReporter(self.send_quiet)
        self.settler = Settler(worker_id, self.outage, master_pid, self.wait)
        self.producer = Producer(
            settings, slot=slot, worker_id=worker_id, settler=self.settler, send=self.send,
            gate=gate, children=children, served=served, stopping=self.should_stop,
            recycle_reason=self.recycle_reason, jobs_left=self.jobs_left)
        self.group = Group(settings.commit_delay_ms / 1000)
        self.ahead = AheadConnection(self.listener)  # pool/ahead.py: the same connection
        self.completer = Completer(
            slot=slot, worker_id=worker_id, group=self.group, settler=self.settler,
            producer=self.producer, outage=self.outage,
            lease_s=settings.effective_stuck_timeout_s, ahead=self.ahead, send=self.send,
            send_quiet=self.send_quiet)
        self.executor = Executor(settings, worker_id, self.group, self.settler, self.outage,
                                 self.completer.abandon_group)

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
            # An abandoned job's last checkpoint, kept by the throttle: the master
            # reads it when it reaps us, and writes it with the job's interruption.
            self.checkpoints.flush()
            self.completer.close()
            self.group.close()
            self.ahead.close()  # and the listener's, when it is the same
            if self.listener is not None:
                self.listener.close()
            if self.executor.tracing is not None:
                self.executor.tracing.flush()
        return EXIT_ABORTED if self.abandoning else EXIT_OK

    def boot(self) -> str | None:
        """Connect and load the handlers; the reason the child cannot work, or None."""
        # A fresh engine for this pid (the inherited pool is dropped unclosed), bound
        # to the URL the master resolved: later get_engine() calls return it.
        db.get_engine(self.database_url)
        job_progress.set_reporter(self.progress)
        checkpoints.set_reporter(self.checkpoints)
        try:
            registry.load_handler_modules(self.settings.handlers)
        except ConfigurationError as exc:
            return str(exc)
        # Asked once, now that the handler modules (where an application sets its
        # tracer provider) are imported.
        self.executor.tracing = tracing.run_tracer()
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
        if self.executor.in_handler:
            raise Abandon()

    def probe_database(self) -> str | None:
        try:
            with bounded(STATEMENT_BOUND_S), db.connect() as conn:
                conn.execute(sql.PROBE)
                # A missing grant would fail a job at random later, in a loop:
                # name every one now, and the master stops with exit 3.
                role, lacking = grants.missing_worker_grants(
                    conn, demo=migrate.demo_installed(conn))
                if not lacking:
                    type_policies.apply_operator_backoff(conn)
            if lacking:
                return (f"the database role {role!r} lacks grants the worker needs "
                        f"(see the least-privileged role in docs/operations.md): {'; '.join(lacking)}")
        except PermissionDenied as exc:
            return f"the database refused the worker: {exc}"
        except DatabaseUnavailable as exc:
            if _refused(exc):
                return f"the database refused the worker: {first_line(exc)}"
            self.outage.failed(exc)  # restarting, say: the loop will wait for it
        except DBAPIError as exc:  # reachable, but no job table, or no right to it
            reason = first_line(exc.orig or exc)
            hint = "; run `skiplock migrate` first" if "does not exist" in reason else ""
            return f"the database refused the worker: {reason}{hint}"
        return None

    def should_stop(self) -> bool:
        return self.stopping or not lifeline.parent_alive(self.master_pid)

    def jobs_left(self, after: int = 0) -> int | None:
        """Jobs this child runs, after `after` more, before `--max-jobs-per-child`
        recycles it; None without that limit."""
        limit = self.settings.max_jobs_per_child
        return max(0, limit - self.jobs_done - after) if limit else None

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

    # -- the loop ------------------------------------------------------------

    def loop(self) -> None:
        producer = self.producer
        while True:
            jobs, producer.next_jobs = producer.next_jobs, None
            if self.should_stop():
                if jobs:  # claimed with the last job: run_batch gives them back unrun
                    self.run_batch(jobs)
                return
            if jobs is None:
                if not self.outage.ready():
                    self.wait(self.outage.retry_at - time.monotonic())
                    continue
                if not producer.may_claim():
                    self.wait(self.settings.poll_min_s)
                    continue
                try:
                    with bounded(STATEMENT_BOUND_S):
                        jobs = producer.claim_alone()
                except Exception as exc:
                    if faults.classify(exc) is None:
                        raise
                    self.outage.failed(exc)
                    continue
                self.outage.succeeded()
                producer.take(jobs)
            if not jobs:
                set_title(worker_title(self.slot))
                self.wait(producer.poll.after_empty())
                continue
            self.run_batch(jobs)
            # With jobs claimed for the next round the child decided not to recycle
            # before it claimed them (Producer.limit), and keeps to that.
            reason = None if producer.next_jobs else self.recycle_reason()
            if reason is not None:
                log.info("worker %d recycling: %s", self.slot, reason)
                self.send(protocol.Exiting(reason))
                return

    def run_batch(self, jobs: list[Job]) -> None:
        """Run a claimed batch, one job at a time, committing as `Group.due` says: the
        commit due before a job runs on the server while the job runs, and before the
        batch's last job it may carry the next claim (pool/ahead.py, pool/completer.py)."""
        completer, durations = self.completer, self.producer.durations
        prepared = [self.executor.prepare(job) for job in jobs]
        for index, job in enumerate(jobs):
            if completer.completions_answered():  # sent while the jobs before ran
                completer.collect_completions()
            if self.should_stop():
                if completer.sent is not None:
                    completer.collect_completions()
                completer.commit_group()
                for left in jobs[index:]:
                    outcome = self.settler.release(left, "worker stopped before it started the job")
                    self.send(protocol.Finished(left.id, outcome, 0.0, left.type))
                return
            expected = durations.expected(job.type)
            if index == len(jobs) - 1 and completer.send_ahead(job, expected):
                pass  # what waited in the group went with the claim of the next batch
            elif self.group.due(expected) and not completer.send_completions(expected):
                completer.commit_group()
            self.run_job(job, *prepared[index])
        if completer.sent is not None:
            completer.collect_ahead()
        else:
            completer.commit_group(claim_next=True)

    def run_job(self, job: Job, registration: Registration | None,
                start: protocol.PreparedStarted) -> None:
        # Quiet: the master reads it at its next turn (pool/protocol.py, two pipes).
        with self.send_lock:
            self.sender.send_started(start, time.monotonic(), time.time())
        set_title(worker_title(self.slot, job.type, job.id))
        self.progress.start(job.id)
        self.checkpoints.start(job.id)
        if log.isEnabledFor(logging.INFO):  # nothing is formatted when it is off
            log.info("job %s %s started (attempt %d/%d)", job.type, job.id, job.attempts,
                     job.max_attempts, extra=job_extra(job, self.worker_id))
        started = time.monotonic()
        outcome = self.executor.execute(job, registration, started)
        duration = time.monotonic() - started
        self.jobs_done += 1
        self.producer.durations.observe(job.type, duration)
        if outcome is not None:  # else it waits in the group for the commit
            self.send(*self.settler.announce([Outcome(job, duration, 0.0, outcome=outcome)]))

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

    def send(self, *messages: protocol.Message) -> None:
        if messages:
            with self.send_lock:
                self.sender.send(*messages)

    def send_quiet(self, message: protocol.Message) -> None:
        with self.send_lock:
            self.sender.send_quiet(message)


def _refused(exc: BaseException) -> bool:
    """A server that refuses us for good (wrong password, no such database or role, no
    right), as opposed to one that is restarting: a boot failure, not an outage."""
    return faults.classify(exc) == faults.Fault.REJECTED


def resident_mb() -> float:
    """This process's resident memory in MiB (Linux's /proc; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
