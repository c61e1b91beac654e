"""The master: a small state machine in the manner of gunicorn's arbiter.

Signal handlers only queue the signal (and `set_wakeup_fd` writes a byte to
the self-pipe that the loop waits on); the loop does everything else, in this
order, about once a second or sooner when something is due:

1. wait for a signal, a message from a child, or the next deadline;
2. read the children's messages (which job each one holds);
3. handle queued signals with `handle_<name>()`;
4. reap dead children and settle the jobs they held, at once;
5. enforce deadlines: overdue jobs, lost jobs, leases about to run out
   unrenewed (self-fencing), stops that ran out of grace;
6. database work: heartbeats of every held job, settlements that are owed,
   stuck recovery when due; all of it rides out an outage (docs/lessons.md);
7. top the pool up (with a back-off for slots whose children crash).

Every deadline of the loop is listed once, in `deadlines()`: the wait and
the enforcement both read that list. The database never holds the loop for
long: all of a turn's database work, observers included, runs within
`database_budget_s` (queue_core/database/bounds.py), so signals, reaping, job timeouts
and fencing keep their timing while the job table is locked, the server
hangs, or it restarts (docs/reliability.md).

States (`PoolState`): running; draining (TERM/INT, or `until()`: children
finish their job and exit, leftovers are killed and released at
`--graceful-timeout`); stopping (QUIT, a second INT, or a halt: children
abandon their jobs now, which are released). The loop ends when no child is
left. The clock, `kill` and `waitpid` can be handed in, so that tests drive
the decisions without forking or waiting (tests/pool/test_master_decisions.py).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import secrets
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Protocol

from skiplock.pool import lifeline, protocol, settlements
from skiplock.pool.aging import Aging
from skiplock.pool.cancelling import stop_cancelled
from skiplock.pool.child import Child
from skiplock.pool.children import RunningJob, WorkerChild
from skiplock.pool.claim_gate import ClaimGate
from skiplock.pool.heartbeats import Heartbeats, database_budget_s
from skiplock.pool.history import HistoryMover
from skiplock.pool.observer import PoolObserver, PoolSnapshot, listens
from skiplock.pool.outage import Outage
from skiplock.pool.outcomes import (
    JobOutcome,
)
from skiplock.pool.postmortem import (
    EXIT_BOOT_FAILURE,
    EXIT_OK,
    describe_status,
    is_boot_failure,
    is_clean_exit,
    signal_name,
)
from skiplock.pool.proctitle import master_title, set_title
from skiplock.pool.recovery import Recovery
from skiplock.pool.routing import Routing
from skiplock.pool.served import Probe
from skiplock.pool.settlements import DB_ERRORS, Owed
from skiplock.pool.states import Cause, Due, PoolState
from skiplock.queue_core import release
from skiplock.queue_core.config import Settings
from skiplock.queue_core.database import db, faults, migrate, urls
from skiplock.queue_core.database.bounds import bounded, unbounded
from skiplock.queue_core.errors import ConfigurationError
from skiplock.queue_core.features import rates, type_policies
from skiplock.queue_core.jobs import JobRef, Progress
from skiplock.queue_core.storable import log_reason

log = logging.getLogger("skiplock.master")


class Periodic(Protocol):
    """One of the master's periodic walks of the hot table (`Master.periodic`)."""

    @property
    def what(self) -> str: ...  # its name in a log line

    def slowed(self, now: float, took_s: float) -> None:
        """The server cancelled this run after `took_s`: when to run again."""

SIGNALS = protocol.POOL_SIGNALS
TICK_S = 1.0
MIN_WAIT_S = 0.02  # something overdue is retried this often, never in a busy loop
ABORT_GRACE_S = 3.0  # QUIT, then SIGKILL: for an overdue job and an immediate stop
LOST_GRACE_S = 1.0  # a lost job's child may be reporting it finished right now
RESPAWN_BACKOFF_S = 0.5
RESPAWN_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a child that lived this long was not crash-looping
FINAL_SETTLE_S = 5.0  # how long a stopping master keeps trying to settle owed jobs
# A drain's grace for a child with no job: it has nothing to finish and exits at once
# on TERM, unless one of its statements waits on a server that does not answer.
IDLE_STOP_S = 1.0

# What the master's own SIGKILL of a child was for, in its log line (post_mortem).
_KILLED_BECAUSE: dict[Cause | None, str] = {
    Cause.FENCED: "its lease could not be renewed",
    Cause.KILLED_TIMEOUT: "its job overran its timeout",
    Cause.KILLED_LOST: "its job was taken by another worker",
    Cause.CANCELLED: "its job was cancelled",
    Cause.STOPPED: "it did not stop in time",
}

OUTAGE_MAX_S = 1.0  # the master retries its leases at least this often in an outage

RUNNING, DRAINING, STOPPING = PoolState.RUNNING, PoolState.DRAINING, PoolState.STOPPING


class Master:
    def __init__(
        self,
        settings: Settings,
        observers: Iterable[PoolObserver] = (),
        until: Callable[[], bool] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        waitpid: Callable[[int, int], tuple[int, int]] = os.waitpid,
    ) -> None:
        self.settings = settings
        self.observers = list(observers)
        self.hook_methods: dict[str, list[Callable[..., None]]] = {}
        self.until = until
        self.clock = clock
        self.waitpid = waitpid
        self.concurrency = settings.effective_concurrency
        self.state: PoolState = RUNNING
        self.exit_code = EXIT_OK
        self.halt_reason: str | None = None
        self.children: dict[int, WorkerChild] = {}
        self.crashes: dict[int, int] = collections.defaultdict(int)
        self.respawn_at: dict[int, float] = {}
        # The master's clock as it is at each call (a test may swap it).
        self.owed = Owed(lambda: self.clock(), self.database_answered, self.database_failed,
                         self.notify)
        self.unanswered = False  # the last database work failed for want of an answer
        self.idle_stops: set[int] = set()  # children a drain gave IDLE_STOP_S, by pid
        self.signal_queue: collections.deque[int] = collections.deque()
        lease_s = settings.effective_stuck_timeout_s
        self.heartbeats = Heartbeats(settings.heartbeat_s, lease_s)
        self.recovery = Recovery(settings.effective_recovery_interval_s, lease_s)
        self.routing = Routing(settings.heartbeat_s, settings.effective_recovery_interval_s,
                               lease_s)
        # Priority aging (pool/aging.py), only with --age-after.
        self.aging = None if settings.age_after_s is None else Aging(
            settings.age_after_s, settings.age_step, settings.age_max)
        # Finished jobs to history partitions (pool/history.py).
        self.history = HistoryMover(clock=clock)
        self.slow_walks: set[str] = set()  # the periodic walks cancelled for taking too long
        # The safety net of rate limits (queue_core/features/rates.py): every heartbeat
        # interval, jobs a trigger could not let in (their row was locked) are let in.
        self.rate_wake_s = settings.heartbeat_s
        self.rate_wake_at = 0.0
        # The job types this pool serves (pool/served.py): known once start() ran.
        self.served: frozenset[str] | None = None
        self.probe: Probe | None = None  # a HUP's reload of the handler modules, under way
        self.budget_s = database_budget_s(lease_s)
        # Children claim only while the leases are being kept: until a little after
        # the last round of heartbeats that reached the database.
        self.claim_window_s = 2 * settings.heartbeat_s + self.budget_s
        self.gate = ClaimGate()
        self.outage = Outage("master", log, max_s=OUTAGE_MAX_S, clock=clock)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.master_id = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self.started_at = time.time()
        self.stop_deadline: float | None = None
        self.next_tick_at = 0.0
        self.wake_r = self.wake_w = -1
        self.saved_handlers: dict[int, Any] = {}
        self.saved_wakeup_fd = -1
        self.database_url = ""

    # -- life ----------------------------------------------------------------

    def run(self) -> int:
        if not self.start():
            return self.exit_code
        try:
            while self.state == RUNNING or self.children:
                self.tick()
            self.finish()
        except BaseException:
            self.emergency_stop()
            raise
        finally:
            self.restore_signals()
        return self.exit_code

    def start(self) -> bool:
        """Everything before the loop; False (and the exit status set) when the handler
        modules cannot be loaded: the pool stops as when a child cannot boot."""
        if os.getpid() != self.pid:
            raise RuntimeError("a Master must run in the process that created it")
        # Resolved once, here: its errors (a bad URL, an embedded cluster that does
        # not run; `skiplock worker` starts it first) stop the pool before anything
        # is forked. The engine is bound to it, and each child binds its own to it.
        self.database_url = urls.database_url(self.settings)
        db.get_engine(self.database_url)
        # The signals are ours before anything is forked: one sent meanwhile waits
        # in the queue for the loop.
        self.install_signals()
        # What this pool serves, from the handler modules imported in a process
        # forked for that alone (pool/served.py). A module that does not import
        # stops the pool as a child that cannot boot did (exit status 3, which
        # supervisors are told not to restart); a --types entry that no handler
        # serves is a bad setting (a ConfigurationError for the caller).
        answer = Probe(self.settings, builtin_available=self.builtin_available(),
                       close_fds=self.close_inherited_fds).wait()
        if answer.boot_failure:
            self.restore_signals()
            self.exit_code = EXIT_BOOT_FAILURE
            log.error("the pool could not boot: %s; stopping the pool (exit status %d)",
                      answer.error, EXIT_BOOT_FAILURE)
            return False
        try:
            self.served = answer.result()
        except ConfigurationError:
            self.restore_signals()
            raise
        self.write_policies(answer.served or frozenset(), answer.policies)
        set_title(master_title(self.concurrency, self.state))
        log.info("skiplock master %s starting: %s", self.master_id,
                 describe_settings(self.settings, self.database_url),
                 extra={"worker": self.master_id})
        log.info("this pool serves %d job type(s): %s; jobs of other types wait for a pool "
                 "that serves them", len(self.served), ", ".join(sorted(self.served)),
                 extra={"worker": self.master_id})
        with bounded(self.budget_s):
            self.notify("on_start", self.snapshot())
        return True

    def tick(self) -> None:
        self.sleep(self.next_wait())
        self.read_messages()
        self.handle_signals()
        self.check_probe()
        self.reap()
        if self.state == RUNNING and self.until is not None and self.until():
            self.begin_drain("asked to stop")
        self.enforce_deadlines()
        # One budget for the turn's database work; the observers get what the
        # master's own work left, and nothing while the database is out. (Never
        # fork inside a bound: the child would inherit its deadline.)
        turn_ends = time.monotonic() + self.budget_s
        with bounded(self.budget_s):
            self.maintain()
        if self.state == RUNNING:
            self.trim()
            self.spawn_missing()
        now = self.clock()
        if now >= self.next_tick_at:
            self.next_tick_at = now + TICK_S
            set_title(master_title(self.concurrency, self.state))
            left = 0.0 if self.outage.active else max(turn_ends - time.monotonic(),
                                                      self.budget_s / 2)
            with bounded(left):
                self.notify("on_tick", self.snapshot())

    def finish(self) -> None:
        # A server that refuses or restarts answers at once and is retried for a while;
        # one that does not answer would hold the exit a whole bound per attempt (past
        # a supervisor's stop timeout): what is owed is then left for stuck recovery.
        deadline = self.clock() + FINAL_SETTLE_S
        while self.owed and self.clock() < deadline and not self.unanswered:
            if self.outage.ready():
                with bounded(self.budget_s):
                    self.owed.settle()
            else:
                time.sleep(min(0.2, max(0.0, self.outage.retry_at - self.clock())))
        if self.owed:
            log.error("could not settle %d job(s) before exiting%s; they are left for stuck "
                      "recovery: %s", len(self.owed),
                      " (the database does not answer)" if self.unanswered else "",
                      self.owed.describe())
        if self.probe is not None:
            self.probe.cancel()
            self.probe = None
        with bounded(0.0 if self.unanswered else self.budget_s):
            self.notify("on_stop", self.snapshot())
        log.info("skiplock master %s stopped%s", self.master_id,
                 f" ({self.halt_reason})" if self.halt_reason else "")

    def emergency_stop(self) -> None:
        """The loop itself failed (a bug): take the children down and give their jobs back."""
        log.critical("master loop failed; killing %d worker(s)", len(self.children), exc_info=True)
        if self.probe is not None:
            self.probe.cancel()
            self.probe = None
        for child in self.children.values():
            child.signal(signal.SIGKILL)
        for child in list(self.children.values()):
            with contextlib.suppress(ChildProcessError):
                self.waitpid(child.pid, 0)
            for ref in child.held.values():
                try:
                    with bounded(self.budget_s):
                        release(ref, f"master of worker pid {child.pid} failed")
                except Exception:  # best effort: stuck recovery is the net
                    log.debug("could not release %s", ref.id, exc_info=True)
            child.reader.close()
        self.children.clear()

    # -- signals ------------------------------------------------------------

    def install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.saved_wakeup_fd = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in SIGNALS:
            self.saved_handlers[sig] = signal.signal(sig, self.queue_signal)

    def queue_signal(self, signum: int, frame: FrameType | None) -> None:
        # Nothing else here (docs/lessons.md: logging or reaping in a signal handler
        # deadlocks); the byte set_wakeup_fd writes wakes the loop. SIGCHLD is not
        # queued: the loop reaps on every tick, and a burst of them must not crowd
        # a TERM out of the (bounded) queue.
        if signum != signal.SIGCHLD and len(self.signal_queue) < 16:
            self.signal_queue.append(signum)

    def restore_signals(self) -> None:
        for sig, handler in self.saved_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.saved_handlers.clear()
        if self.wake_w >= 0:
            signal.set_wakeup_fd(self.saved_wakeup_fd)
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.wake_r = self.wake_w = -1

    def handle_signals(self) -> None:
        while self.signal_queue:
            signum = self.signal_queue.popleft()
            name = signal_name(signum).removeprefix("SIG").lower()
            log.info("master received %s", signal_name(signum))
            getattr(self, f"handle_{name}")()

    def handle_term(self) -> None:
        self.begin_drain("SIGTERM")

    def handle_int(self) -> None:
        if self.state == RUNNING:
            self.begin_drain("SIGINT")
        else:  # a second Ctrl-C: stop waiting for the running jobs
            self.begin_stop("second SIGINT")

    def handle_quit(self) -> None:
        self.begin_stop("SIGQUIT")

    def builtin_available(self) -> bool:
        """Whether the built-in handlers' demo domain is installed here: they serve their
        types only then (docs/schema.md). Asked at start and on HUP, which is also how a
        pool takes them up after `skiplock migrate --demo`. Unknown (the database does
        not answer) counts as no: their jobs wait for a pool that serves them, rather than
        fail in one that cannot."""
        try:
            with bounded(self.budget_s), db.connect() as conn:
                return migrate.demo_installed(conn)
        except DB_ERRORS as exc:
            log.warning("cannot tell whether the demo domain of the built-in handlers is "
                        "installed (%s): they serve no job type until the next HUP",
                        log_reason(str(exc)), extra={"worker": self.master_id})
            return False

    def handle_hup(self) -> None:
        if self.state != RUNNING:
            return
        if self.probe is not None:
            log.info("the handler modules are being reloaded already")
            return
        # The handler modules are imported again, in a probe (pool/served.py), for
        # what the new children will serve; they replace the old ones once it
        # answered (`check_probe`). The loop goes on meanwhile.
        log.info("reloading the handler modules")
        self.probe = Probe(self.settings, builtin_available=self.builtin_available(),
                           close_fds=self.close_inherited_fds)

    def check_probe(self) -> None:
        """A HUP's probe answered: new children, with what it found, replace the old."""
        answer = self.probe.poll() if self.probe is not None else None
        if answer is None:
            return
        self.probe = None
        if self.state != RUNNING:
            return
        if answer.served is None:
            log.error("cannot reload the handler modules: %s; the workers keep running the "
                      "code they have", answer.error)
            return
        if answer.served != self.served:
            log.info("this pool now serves %d job type(s): %s", len(answer.served),
                     ", ".join(sorted(answer.served)))
            self.served = answer.served
            self.routing.served_changed()
        self.write_policies(answer.served, answer.policies)
        self.replace_children()

    def write_policies(self, served: frozenset[str], rows: tuple[dict[str, Any], ...]) -> None:
        """The served types' `@handler(...)` options into "WorkerTypePolicy", where the
        insert trigger applies them to rows of any producer (queue_core/features/
        type_policies.py). A pool that cannot write them runs anyway: the rows of the
        last boot that could stay."""
        try:
            with bounded(self.budget_s):
                type_policies.write_boot(served, list(rows), self.master_id)
        except DB_ERRORS as exc:
            log.warning("cannot write the job types' policies (%s): rows written by other "
                        "producers get the policies the database had", log_reason(str(exc)),
                        extra={"worker": self.master_id})

    def replace_children(self) -> None:
        # New children (with freshly imported handler modules) take the slots at
        # once; the old ones finish their job and exit.
        log.info("replacing %d worker(s)", len(self.children))
        for child in self.children.values():
            if not child.retiring:
                child.stop(signal.SIGTERM, self.settings.graceful_timeout_s, Cause.STOPPED,
                           self.clock())
        self.respawn_at.clear()
        self.crashes.clear()

    def handle_ttin(self) -> None:
        if self.state == RUNNING:
            self.concurrency += 1
            log.info("concurrency raised to %d", self.concurrency)

    def handle_ttou(self) -> None:
        if self.state == RUNNING and self.concurrency > 1:
            self.concurrency -= 1
            log.info("concurrency lowered to %d", self.concurrency)
            self.trim()

    def begin_drain(self, why: str) -> None:
        if self.state != RUNNING:
            return
        self.state = DRAINING
        grace = self.settings.graceful_timeout_s
        self.stop_deadline = self.clock() + grace
        busy = sum(1 for c in self.children.values() if c.job is not None)
        log.info("draining (%s): %d worker(s), %d running job(s), up to %gs to finish",
                 why, len(self.children), busy, grace)
        for child in self.children.values():
            if child.job is None and grace > IDLE_STOP_S:
                child.stop(signal.SIGTERM, IDLE_STOP_S, Cause.STOPPED, self.clock())
                self.idle_stops.add(child.pid)
            else:
                child.stop(signal.SIGTERM, grace, Cause.STOPPED, self.clock())
        set_title(master_title(self.concurrency, self.state))

    def begin_stop(self, why: str) -> None:
        if self.state == STOPPING:
            return
        self.state = STOPPING
        grace = min(ABORT_GRACE_S, self.settings.graceful_timeout_s)
        log.info("stopping now (%s): %d worker(s) abandon their jobs, which are released",
                 why, len(self.children))
        for child in self.children.values():
            child.stop(signal.SIGQUIT, grace, Cause.STOPPED, self.clock())
        set_title(master_title(self.concurrency, self.state))

    # -- waiting and listening ------------------------------------------------

    def deadlines(self) -> list[tuple[float, Due, WorkerChild | None]]:
        """Every moment the loop must act at, in one list: `next_wait` sleeps until the
        first, `enforce_deadlines` acts on the child ones that are due."""
        now = self.clock()
        due: list[tuple[float, Due, WorkerChild | None]] = [(self.next_tick_at, Due.TICK, None)]
        if self.outage.active:  # no database work before the back-off is over
            due.append((self.outage.retry_at, Due.OUTAGE_RETRY, None))
        else:
            due.append((self.heartbeats.next_at, Due.HEARTBEAT, None))
            recovery_at = self.recovery.next_due()
            if self.state == RUNNING and recovery_at is not None:
                if self.owed:  # not before the settlements a lock held up (maintain)
                    recovery_at = max(recovery_at, self.owed.settle_at)
                due.append((recovery_at, Due.RECOVERY, None))
        if self.state == RUNNING:
            taken = {c.slot for c in self.children.values() if not c.retiring}
            due.extend((self.respawn_at.get(slot, now), Due.RESPAWN, None)
                       for slot in range(self.concurrency) if slot not in taken)
        for child in self.children.values():
            if child.kill_at is not None and not child.killed:
                due.append((child.kill_at, Due.KILL, child))
            if child.killed:
                continue  # nothing more to do to it but reap it
            if child.lost_since is not None:
                due.append((child.lost_since + LOST_GRACE_S, Due.LOST, child))
            if (child.job is not None and child.job.deadline is not None
                    and child.cause != Cause.KILLED_TIMEOUT):
                due.append((child.job.deadline, Due.JOB_TIMEOUT, child))
            fence_at = [at for at in map(self.heartbeats.fence_at, child.held) if at is not None]
            if fence_at:
                due.append((min(fence_at), Due.FENCE, child))
        return due

    def next_wait(self) -> float:
        now = self.clock()
        first = min((at for at, _, _ in self.deadlines()), default=now + TICK_S)
        return min(TICK_S, max(MIN_WAIT_S, first - now))

    def sleep(self, timeout: float) -> None:
        fds = [self.wake_r] + [c.reader.fd for c in self.children.values() if not c.reader.closed]
        if self.probe is not None:
            fds.append(self.probe.fileno())
        readable, _, _ = select.select(fds, [], [], timeout)
        if self.wake_r in readable:
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass

    def read_messages(self) -> None:
        for child in list(self.children.values()):
            for message in child.reader.read():
                self.on_message(child, message)

    def on_message(self, child: WorkerChild, message: protocol.Message) -> None:
        if isinstance(message, protocol.Ready):
            child.booted = True
        elif isinstance(message, protocol.BootFailed):
            child.boot_failure = message.reason
        elif isinstance(message, protocol.Claimed):
            # The lease was dated by the claim, which the child sent before this message.
            dated_by = message.sent_at if message.sent_at is not None else self.clock()
            for ref in message.refs():
                child.held[ref.id] = ref
                self.heartbeats.hold(ref.id, dated_by)
        elif isinstance(message, protocol.Started):
            if child.job is not None and child.job.ref.id != message.id:
                # Its job ran to an end and waits for the group's commit.
                child.ran[child.job.ref.id] = (child.job.ref, child.job.type)
            child.held[message.id] = message.ref
            self.heartbeats.hold(message.id, self.clock())
            # Timed from when the child started it: the quiet pipe is read a turn later.
            child.job = RunningJob(message.ref, message.type, message.max_attempts,
                                   message.timeout_s,
                                   self.clock() if message.at is None else message.at,
                                   time.time() if message.at_wall is None else message.at_wall)
            if self.hooks("on_job_started"):  # nothing built per job when nobody listens
                self.notify("on_job_started", child.info(), message.id, message.type,
                            message.attempt)
            if message.id in child.lost:  # rescued while it waited in the child's batch
                child.lost_since = self.clock() - LOST_GRACE_S
        elif isinstance(message, protocol.Finished):
            child.held.pop(message.id, None)
            child.ran.pop(message.id, None)
            if child.checkpoints:
                child.checkpoints.pop(message.id, None)
            self.heartbeats.forget(message.id)
            child.lost.discard(message.id)
            if child.job is not None and child.job.ref.id == message.id:
                info, job_type = child.info(), child.job.type
                child.job = None
                child.lost_since = None
                self.crashes[child.slot] = 0  # it ran a job to an end: not a crash loop
                self.notify("on_job_finished", info, message.id, job_type, message.outcome,
                            message.duration_s)
            elif message.type and self.hooks("on_job_finished"):
                # committed in a group after its child started the next job
                self.notify("on_job_finished", child.info(), message.id, message.type,
                            message.outcome, message.duration_s)
        elif isinstance(message, protocol.Exiting):
            child.exit_reason = message.reason
        elif (isinstance(message, protocol.Progress)  # written with the next heartbeat
              and child.job is not None and child.job.ref.id == message.id):
            child.job.progress = Progress(message.fraction, message.message)
            self.heartbeats.progress[message.id] = child.job.progress
        elif (isinstance(message, protocol.Checkpoint)  # the same way, and kept for the
              and child.job is not None and child.job.ref.id == message.id):  # settlement
            child.checkpoints[message.id] = message.state
            self.heartbeats.checkpoints[message.id] = message.state

    # -- reaping -------------------------------------------------------------

    def reap(self) -> None:
        # waitpid per child rather than waitpid(-1): when the pool is embedded
        # (pool.run in a test or an application), the calling process may have
        # children of its own whose exit status is not ours to take.
        for child in list(self.children.values()):
            try:
                pid, status = self.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:  # reaped behind our back; we cannot know how it ended
                pid, status = child.pid, 255 << 8
            if pid == 0:
                continue
            del self.children[child.pid]
            self.idle_stops.discard(child.pid)
            for message in child.reader.read():
                self.on_message(child, message)
            child.reader.close()
            self.post_mortem(child, status)

    def post_mortem(self, child: WorkerChild, status: int) -> None:
        how = describe_status(status, _KILLED_BECAUSE.get(child.cause, "it did not stop in time")
                              if child.killed else None)
        # Status 3 from a child that had booted is a handler's own exit, not ours.
        cause: Cause
        if child.boot_failure is not None or (is_boot_failure(status) and not child.booted):
            cause = Cause.CRASHED
            self.halt(f"worker {child.slot} could not boot: {child.boot_failure or how}")
        elif child.cause is not None:
            cause = child.cause
        elif is_clean_exit(status):
            cause = Cause.RECYCLED
        else:
            cause = Cause.CRASHED

        running = child.job.ref.id if child.job is not None else ""
        if child.job is not None:
            self.settle_running(child, status, cause)
        for ref in child.held.values():  # its leases are no longer kept
            self.heartbeats.forget(ref.id)
        for settlement in settlements.for_the_rest(child, how, running):
            self.owed.owe(settlement)
        self.notify("on_child_exit", child.info(), cause.value)

        if cause == Cause.RECYCLED:
            log.info("%s recycled: %s", child.label(), child.exit_reason or how)
        elif cause == Cause.CRASHED and self.state == RUNNING:
            now = self.clock()
            if now - child.spawned > STABLE_AFTER_S:
                self.crashes[child.slot] = 0
            self.respawn_at[child.slot] = self.crashed(child.slot, now)
            log.warning("%s %s; respawning in %.1fs (crash %d in a row)", child.label(), how,
                        self.respawn_at[child.slot] - now, self.crashes[child.slot])
        elif cause == Cause.CRASHED or child.killed:
            log.warning("%s %s", child.label(), how)
        else:
            log.debug("%s %s (%s)", child.label(), how, cause)

    def crashed(self, slot: int, now: float) -> float:
        """Count a crash of `slot`; when to respawn it. The first respawn is at once,
        then 0.5 s, 1 s, 2 s, ... up to 30 s while its children keep dying."""
        self.crashes[slot] += 1
        n = self.crashes[slot]
        delay = 0.0 if n == 1 else min(RESPAWN_BACKOFF_MAX_S, RESPAWN_BACKOFF_S * 2 ** (n - 2))
        return now + delay

    def settle_running(self, child: WorkerChild, status: int, cause: Cause) -> None:
        job = child.job
        assert job is not None
        ref = job.ref
        child.held.pop(ref.id, None)
        self.heartbeats.forget(ref.id)
        duration = self.clock() - job.started
        if cause == Cause.CANCELLED:  # ended FAILED by pool/cancelling.py before the stop
            self.notify("on_job_finished", child.info(), ref.id, job.type,
                        Cause.CANCELLED.value, duration)
        elif cause == Cause.KILLED_LOST:
            log.warning("job %s %s: result of %s discarded, the job belongs to another worker",
                        job.type, ref.id, child.label(),
                        extra={"job_id": ref.id, "job_type": job.type})
            self.notify("on_job_finished", child.info(), ref.id, job.type, JobOutcome.LOST,
                        duration)
        else:
            # Written by this turn's database work (maintain), within its budget.
            self.owed.owe(settlements.for_running(child, status, cause, duration))

    def halt(self, reason: str) -> None:
        if self.halt_reason is not None:
            return
        self.halt_reason = reason
        self.exit_code = EXIT_BOOT_FAILURE
        log.error("%s; stopping the pool (exit status %d)", reason, EXIT_BOOT_FAILURE)
        self.begin_stop("a worker cannot boot")

    # -- deadlines -------------------------------------------------------------

    def enforce_deadlines(self) -> None:
        now = self.clock()
        for at, due, child in sorted(self.deadlines(), key=lambda d: d[0]):
            if at > now or child is None or child.killed:
                continue
            if due == Due.KILL:
                idle = child.pid in self.idle_stops and child.cause == Cause.STOPPED
                if (idle and child.job is not None and self.state == DRAINING
                        and self.stop_deadline is not None):
                    # It started a job just before the TERM (heard of since): the job
                    # gets the drain's whole grace, as every running job does.
                    self.idle_stops.discard(child.pid)
                    child.kill_at = max(at, self.stop_deadline)
                    continue
                if idle:
                    log.warning("%s has no job but did not exit within %gs of SIGTERM "
                                "(waiting on a database that does not answer?); killing it",
                                child.label(), IDLE_STOP_S)
                elif child.cause != Cause.KILLED_LOST:
                    log.warning("%s did not stop in time; killing it", child.label())
                child.signal(signal.SIGKILL)
                child.killed = True
            elif due == Due.FENCE:
                self.fence(child, now)
            elif due == Due.JOB_TIMEOUT and child.job is not None:
                job = child.job
                log.warning("job %s %s overran its timeout of %gs; stopping %s", job.type,
                            job.ref.id, job.timeout_s, child.label(),
                            extra={"job_id": job.ref.id, "job_type": job.type})
                child.cause = Cause.KILLED_TIMEOUT
                child.stop(signal.SIGQUIT, ABORT_GRACE_S, Cause.KILLED_TIMEOUT, now)
            elif due == Due.LOST:
                child.lost_since = None
                lost = child.job
                if lost is not None and lost.ref.id in child.lost:
                    log.warning("job %s %s is no longer held by %s (rescued elsewhere); killing "
                                "it so that its result is discarded", lost.type, lost.ref.id,
                                child.label(), extra={"job_id": lost.ref.id,
                                                      "job_type": lost.type})
                    child.cause = Cause.KILLED_LOST
                    child.kill_now(Cause.KILLED_LOST, now)

    def fence(self, child: WorkerChild, now: float) -> None:
        """A lease of this child is about to run out unrenewed: another host may rescue
        the job soon, so it must not be running here by then (docs/reliability.md)."""
        ages = [now - at for at in map(self.heartbeats.renewed.get, child.held) if at is not None]
        job = child.job
        # A row lock is the reason only while the database answers: else it may be
        # down as well, and that is what the job's lastError says.
        locked = None if self.outage.active else next(
            (j for j in child.held if j in self.heartbeats.blocked), None)
        if locked is not None:
            child.fenced_because = self.heartbeats.lock_reason(locked, "was")
        log.error("%s: lease of %s not renewed for %.1fs (stuck timeout %gs)%s; stopping it "
                  "before another host may rescue the job", child.label(),
                  f"job {job.type} {job.ref.id}" if job else f"{len(child.held)} claimed job(s)",
                  max(ages, default=0.0), self.heartbeats.lease_s,
                  f": {self.heartbeats.lock_reason(locked)}" if locked is not None else "",
                  extra={"job_id": job.ref.id, "job_type": job.type} if job else {})
        # The kill must happen now, whatever gentler stop is under way. A timeout's
        # cause still decides how the job is settled (that attempt overran); a
        # shutdown's gives way, so that lastError says why the job was cut short.
        if child.cause == Cause.STOPPED:
            child.cause = Cause.FENCED
        child.kill_now(Cause.FENCED, now)

    # -- database work -------------------------------------------------------

    def database_answered(self, began: float) -> None:
        self.outage.succeeded()
        self.recovery.connected(began)
        self.unanswered = False

    def database_failed(self, exc: BaseException) -> None:
        fault = faults.classify(exc)
        if fault == faults.Fault.NO_TIME_LEFT:
            return  # this turn's budget ran out before the work began: the next turn does it
        self.unanswered = fault == faults.Fault.CLIENT_TIMEOUT
        self.outage.failed(exc)
        self.recovery.disconnected()

    def maintain(self) -> None:
        now = self.clock()
        if self.outage.active and not self.outage.ready(now):
            return
        # After an outage, heartbeats go first: our running jobs' leases are stale,
        # and our own recovery must not take them for a dead host's.
        if self.heartbeats.due(now) or self.outage.active:
            refs = [ref for child in self.children.values() for ref in child.held.values()]
            try:
                renewal = self.heartbeats.beat(refs, now)
            except DB_ERRORS as exc:
                self.database_failed(exc)
                return
            self.database_answered(now)
            self.gate.open_until(now + self.claim_window_s)
            self.read_messages()  # what the children said while we waited for the answer
            self.mark_lost(refs, renewal.held)
            if renewal.cancel_requested:
                try:
                    with bounded(self.budget_s):
                        stop_cancelled(self.children.values(), renewal.cancel_requested,
                                       ABORT_GRACE_S, now)
                except DB_ERRORS as exc:
                    self.database_failed(exc)
                    return
                for job_id in renewal.cancel_requested:  # ended: no lease to keep or fence
                    self.heartbeats.forget(job_id)
        # Settlements that a row lock held up wait for their retry, and so does stuck
        # recovery: it would take those rows first once the lock goes (their leases
        # are stale by then) and settle as a rescue what the master knows happened,
        # a timeout or a crash. It runs right after the settlements are tried again.
        held_up = self.owed.held_up(now)
        if self.owed and not held_up and not self.owed.settle():
            return
        if (self.state == RUNNING and self.recovery.due(now) and not held_up
                and not self.periodic(self.recovery, now, functools.partial(self.recovery.run_once, now))):
            return
        if self.state == RUNNING and self.served is not None:
            self.route(self.served, now)
        aging = self.aging
        if (self.state == RUNNING and aging is not None and aging.due(now)
                and not self.periodic(aging, now, functools.partial(aging.run_once, now))):
            return
        if self.state == RUNNING and self.history.due(now):
            with bounded(self.budget_s):
                if not self.periodic(self.history, now, functools.partial(self.history.run_once, now)):
                    return
        if self.state == RUNNING and now >= self.rate_wake_at:
            self.wake_rates(now)

    def periodic(self, task: Periodic, now: float, run: Callable[[], object]) -> bool:
        """Run one of the master's periodic walks of the hot table (stuck recovery, aging,
        the history mover); False: the database is out (counted as an outage).

        A walk the server cancelled at the turn's time bound (statement_timeout) has
        become slow, the database is not down: behind a held snapshot every walk of the
        hot table's indexes grows with each job run (queue_core/pacing.py). Counted as an
        outage, it stopped the claims of the whole pool, every few seconds, for as long
        as the snapshot was held; it runs less often instead, and the claims go on."""
        try:
            run()
        except DB_ERRORS as exc:
            if faults.classify(exc) != faults.Fault.STATEMENT_TIMEOUT:
                self.database_failed(exc)
                return False
            took = self.clock() - now
            task.slowed(now, took)
            if task.what not in self.slow_walks:
                self.slow_walks.add(task.what)
                log.warning("%s took longer than this turn's %.1f s and was cancelled (a long "
                            "transaction or a replication slot may hold back vacuum): it runs "
                            "less often until it is quick again", task.what, took)
            return True
        if task.what in self.slow_walks:
            self.slow_walks.discard(task.what)
            log.info("%s is quick again", task.what)
        self.database_answered(now)
        return True

    def wake_rates(self, now: float) -> None:
        """Let in the rate-limited jobs that their triggers skipped (one short statement,
        which finds no key to look at almost always)."""
        self.rate_wake_at = now + self.rate_wake_s
        try:
            with bounded(self.budget_s):
                rates.wake()
        except DB_ERRORS as exc:
            self.database_failed(exc)
            return
        self.database_answered(now)

    def route(self, served: frozenset[str], now: float) -> None:
        """Put back the parked jobs this pool serves; park what no live pool serves
        (pool/routing.py)."""
        unpark = self.routing.unpark_due(now)
        park = self.routing.park_due(now, self.recovery.allowed_at())
        if not (unpark or park):
            return
        def run() -> None:
            if unpark:
                self.routing.unpark(served, now)
            if park:
                self.routing.park(served, now)

        self.periodic(self.routing, now, run)

    def mark_lost(self, refs: list[JobRef], held: frozenset[str]) -> None:
        now = self.clock()
        for ref in refs:
            if ref.id in held:
                continue
            for child in self.children.values():
                if child.held.get(ref.id) != ref:
                    continue  # finished meanwhile, or another child's
                child.lost.add(ref.id)
                if child.job is not None and child.job.ref.id == ref.id:
                    child.lost_since = child.lost_since or now
                else:  # not started yet: stop beating for it; killed if it starts
                    child.held.pop(ref.id, None)
                    self.heartbeats.forget(ref.id)

    # -- the pool's size ------------------------------------------------------

    def trim(self) -> None:
        for child in self.children.values():
            if not child.retiring and child.slot >= self.concurrency:
                child.stop(signal.SIGTERM, self.settings.graceful_timeout_s, Cause.STOPPED,
                           self.clock())

    def spawn_missing(self) -> None:
        now = self.clock()
        taken = {c.slot for c in self.children.values() if not c.retiring}
        for slot in range(self.concurrency):
            if slot not in taken and now >= self.respawn_at.get(slot, 0.0):
                try:
                    self.spawn(slot)
                except OSError as exc:  # EAGAIN, ENOMEM: the host is short, not the pool broken
                    self.respawn_at[slot] = self.crashed(slot, now)
                    log.error("cannot fork worker %d: %s; retrying in %.1fs", slot, exc,
                              self.respawn_at[slot] - now)

    def spawn(self, slot: int) -> None:
        token = secrets.token_hex(4)
        read_fd, write_fd = os.pipe()
        try:
            quiet_r, quiet_w = os.pipe()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # A TERM sent to a brand-new child waits for the child's own handler.
        pid, saved_mask = lifeline.fork_blocking(SIGNALS, (read_fd, write_fd, quiet_r, quiet_w))
        if pid == 0:  # the child: never returns into the caller's code
            code = 1
            try:
                os.close(read_fd)
                os.close(quiet_r)
                self.close_inherited_fds()
                worker_id = f"{self.host}:{os.getpid()}:{token}"
                with unbounded():  # no deadline of the master's turn may follow the fork
                    code = Child(self.settings, slot=slot, worker_id=worker_id,
                                 master_pid=self.pid, fd=write_fd, quiet_fd=quiet_w,
                                 database_url=self.database_url, gate=self.gate,
                                 children=self.concurrency, served=self.served).run()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # a bug in the child: a crash, reported by waitpid
                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):  # nothing to be done about it now
                        stream.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        os.close(write_fd)
        os.close(quiet_w)
        child = WorkerChild(slot, pid, f"{self.host}:{pid}:{token}",
                            protocol.Reader(read_fd, quiet_r))
        self.children[pid] = child
        log.debug("spawned %s", child.label())

    def close_inherited_fds(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        for other in self.children.values():
            other.reader.close()
        if self.probe is not None:
            os.close(self.probe.fileno())

    # -- observers -------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(
            master_id=self.master_id,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            concurrency=self.concurrency,
            state=self.state.value,
            children=tuple(sorted((c.info() for c in self.children.values()),
                                  key=lambda info: (info.index, info.started_at))),
            served=self.served,
        )

    def hooks(self, hook: str) -> list[Callable[..., None]]:
        """The observers' methods for `hook` that do something (observer.listens)."""
        methods = self.hook_methods.get(hook)
        if methods is None:
            methods = [getattr(o, hook) for o in self.observers if listens(o, hook)]
            self.hook_methods[hook] = methods
        return methods

    def notify(self, hook: str, *args: Any) -> None:
        for method in self.hooks(hook):
            try:
                method(*args)
            except Exception:  # an observer must not take the pool down
                log.exception("pool observer %r failed in %s", getattr(method, "__self__", method), hook)


def describe_settings(settings: Settings, database_url: str) -> str:
    """The effective configuration in one line, the password redacted."""

    def optional(value: object, unit: str = "") -> str:
        return "none" if value is None else f"{value}{unit}"

    parts = {
        "database": urls.redact(database_url),
        "concurrency": settings.effective_concurrency,
        "heartbeat": f"{settings.heartbeat_s:g}s",
        "stuck_timeout": f"{settings.effective_stuck_timeout_s:g}s",
        "recovery_interval": f"{settings.effective_recovery_interval_s:g}s",
        "job_timeout": optional(settings.job_timeout_s, "s"),
        "graceful_timeout": f"{settings.graceful_timeout_s:g}s",
        "max_jobs_per_child": optional(settings.max_jobs_per_child),
        "max_memory_per_child": optional(settings.max_memory_per_child_mb, "MiB"),
        "handlers": ",".join(settings.handlers) or "none",
        "types": ",".join(settings.types) or "all",
        "exclude_types": ",".join(settings.exclude_types) or "none",
        "listen": settings.listen,
        "poll": f"{settings.poll_min_s:g}-{settings.poll_max_s:g}s",
        "batch_size": settings.batch_size,
        "aging": "off" if settings.age_after_s is None else (
            f"{settings.age_after_s:g}s+{settings.age_step}"
            f"<={optional(settings.age_max)}"),
    }
    return " ".join(f"{key}={value}" for key, value in parts.items())
