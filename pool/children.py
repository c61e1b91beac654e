"""The master's record of one child: what it holds, and how it is being stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from skiplock.pool import protocol
from skiplock.pool.observer import ChildInfo
from skiplock.pool.states import Cause
from skiplock.queue_core.jobs import JobRef, Progress


@dataclass
class RunningJob:
    """The job a child said it started (protocol.Started), as the master tracks it."""

    ref: JobRef
    type: str
    max_attempts: int
    timeout_s: float | None
    started: float  # monotonic, when the master heard of it
    started_wall: float
    progress: Progress | None = None  # what its handler last reported

    @property
    def deadline(self) -> float | None:
        return None if self.timeout_s is None else self.started + self.timeout_s


@dataclass
class WorkerChild:
    slot: int
    pid: int
    worker_id: str
    reader: protocol.Reader
    spawned_at: float = field(default_factory=time.time)
    spawned: float = field(default_factory=time.monotonic)
    held: dict[str, JobRef] = field(default_factory=dict)  # claimed, not yet settled
    job: RunningJob | None = None
    # Jobs that ran to an end and wait for their group's commit (no `finished` yet).
    ran: dict[str, tuple[JobRef, str]] = field(default_factory=dict)
    # The last `skiplock.checkpoint` (JSON text) of each job it holds that took one:
    # written with the heartbeats, and with the job's settlement should the child die.
    checkpoints: dict[str, str] = field(default_factory=dict)
    retiring: bool = False  # TERM sent: it exits after its job, a new child takes its slot
    cause: Cause | None = None  # why the master stopped it
    kill_at: float | None = None  # monotonic deadline of the SIGKILL that ends an escalation
    killed: bool = False  # the SIGKILL was sent
    lost: set[str] = field(default_factory=set)  # held ids a heartbeat found rescued
    lost_since: float | None = None
    booted: bool = False
    boot_failure: str | None = None
    exit_reason: str | None = None
    fenced_because: str | None = None  # why its lease could not be renewed, when known
    kill: Callable[[int, int], None] = os.kill  # tests of the master's decisions record it instead

    def info(self) -> ChildInfo:
        return ChildInfo(
            index=self.slot,
            pid=self.pid,
            worker_id=self.worker_id,
            started_at=self.spawned_at,
            job_id=self.job.ref.id if self.job else None,
            job_type=self.job.type if self.job else None,
            job_started_at=self.job.started_wall if self.job else None,
            progress=self.job.progress if self.job else None,
        )

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already dead, not yet reaped
            self.kill(self.pid, signum)

    def stop(self, signum: int, grace_s: float, cause: Cause, now: float) -> None:
        """One escalation: `signum` now, SIGKILL once the grace runs out (docs/lessons.md).

        A stop already under way keeps its first cause and its earlier deadline."""
        if self.cause is None:
            self.cause = cause
        self.retiring = True
        deadline = now + grace_s
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)
        self.signal(signum)

    def kill_now(self, cause: Cause, now: float) -> None:
        if self.cause is None:
            self.cause = cause
        self.retiring = True
        self.kill_at = now
        self.killed = True
        self.signal(signal.SIGKILL)

    def label(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"
