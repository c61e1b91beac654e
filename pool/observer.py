"""What the master tells the rest of the world about its pool.

The master calls these hooks from its loop (never from signal context); the
process table (`skiplock ps`) and the Prometheus metrics are observers. An
observer must be quick and must not raise: the master logs and drops an
exception from one, and carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from skiplock.queue_core.jobs import Progress


@dataclass(frozen=True)
class ChildInfo:
    """A child as the master knows it."""

    index: int  # stable slot number, shown in process titles ("worker 2")
    pid: int
    worker_id: str  # the child's lockedBy: host:pid:boot-id, unique per process start
    started_at: float  # time.time() of the fork
    job_id: str | None = None
    job_type: str | None = None
    job_started_at: float | None = None
    progress: Progress | None = None  # the running job's last `skiplock.progress`


@dataclass(frozen=True)
class PoolSnapshot:
    """The pool at one tick of the master loop."""

    master_id: str
    host: str
    pid: int
    started_at: float
    concurrency: int
    state: str  # "running", "draining", "stopping"
    children: tuple[ChildInfo, ...]
    served: frozenset[str] | None = None  # the job types it serves (pool/served.py)


class PoolObserver(Protocol):
    def on_start(self, snapshot: PoolSnapshot) -> None: ...

    def on_tick(self, snapshot: PoolSnapshot) -> None:
        """Called about once a second."""

    def on_job_started(self, child: ChildInfo, job_id: str, job_type: str, attempt: int) -> None: ...

    def on_job_finished(
        self, child: ChildInfo, job_id: str, job_type: str, outcome: str, duration_s: float
    ) -> None:
        """outcome: "completed", "retried", "dead_lettered", "lost", "released", "cancelled",
        "snoozed". Called once the job's end is committed; the master may hear of
        a completion whose commit claimed nothing up to a second later
        (pool/completer.py, `collect_completions`)."""

    def on_child_exit(self, child: ChildInfo, cause: str) -> None:
        """cause: "recycled", "crashed", "killed_timeout", "killed_lost", "stopped",
        "cancelled"."""

    def on_stop(self, snapshot: PoolSnapshot) -> None: ...


class NullObserver:
    """An observer that ignores everything; subclass it and override what you need."""

    def on_start(self, snapshot: PoolSnapshot) -> None:
        pass

    def on_tick(self, snapshot: PoolSnapshot) -> None:
        pass

    def on_job_started(self, child: ChildInfo, job_id: str, job_type: str, attempt: int) -> None:
        pass

    def on_job_finished(
        self, child: ChildInfo, job_id: str, job_type: str, outcome: str, duration_s: float
    ) -> None:
        pass

    def on_child_exit(self, child: ChildInfo, cause: str) -> None:
        pass

    def on_stop(self, snapshot: PoolSnapshot) -> None:
        pass


def listens(observer: object, hook: str) -> bool:
    """Whether `observer` does something in `hook`: not a NullObserver's empty method.

    The master calls only these, and builds the arguments of a per-job hook only
    when someone listens: an observer that ignores jobs costs nothing per job."""
    method = getattr(type(observer), hook, None)
    return method is not None and method is not getattr(NullObserver, hook)
