"""What a child tells its master, over a pipe of its own.

One JSON object per line. The master needs to know which job each child holds
so that it can send the heartbeats, enforce the timeout, and settle the job if
the child dies; everything else it learns from `waitpid`. The messages are
small (well under PIPE_BUF, so a write is atomic), and a child writes only to
its own pipe, so lines never interleave. Signals go the other way: TERM
(finish the job, then exit) and QUIT (abandon the job now).
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from typing import Any

from skiplock.queue_core.jobs import JobRef

# The signals of gunicorn's conventions that the master handles. It blocks them
# around each fork; the child unblocks them once its own handlers are in place.
POOL_SIGNALS = (
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


@dataclass(frozen=True)
class Ready:
    """The child booted and is about to claim."""

    worker_id: str


@dataclass(frozen=True)
class BootFailed:
    """The child cannot boot; it exits with EXIT_BOOT_FAILURE after this."""

    reason: str


@dataclass(frozen=True)
class Claimed:
    """The child holds these jobs (a batch is run one at a time); heartbeat them all."""

    jobs: list[tuple[str, str, int]]  # (id, lockedBy, attempts)
    # time.monotonic() (one clock for the host's processes) just before the claim was
    # sent: the database dated the leases no earlier, and the master fences by it.
    sent_at: float | None = None

    def refs(self) -> list[JobRef]:
        return [JobRef(job_id, locked_by, attempts) for job_id, locked_by, attempts in self.jobs]


@dataclass(frozen=True)
class Started:
    id: str
    type: str
    locked_by: str
    attempt: int
    max_attempts: int
    timeout_s: float | None

    @property
    def ref(self) -> JobRef:
        return JobRef(self.id, self.locked_by, self.attempt)


@dataclass(frozen=True)
class Finished:
    """The child settled the job itself (outcome as in PoolObserver.on_job_finished)."""

    id: str
    outcome: str
    duration_s: float
    # With group commit a job's `finished` can follow the `started` of the next one,
    # so the master no longer knows the type from the job it last heard of.
    type: str = ""


@dataclass(frozen=True)
class Progress:
    """What the running job's handler last reported (`skiplock.progress`); the master
    writes it with the next heartbeat."""

    id: str
    fraction: float | None
    message: str | None


@dataclass(frozen=True)
class Exiting:
    """The child is about to exit 0 on its own (recycled)."""

    reason: str


Message = Ready | BootFailed | Claimed | Started | Finished | Exiting | Progress

_KINDS: dict[str, type[Any]] = {
    "ready": Ready,
    "boot_failed": BootFailed,
    "claimed": Claimed,
    "started": Started,
    "finished": Finished,
    "exiting": Exiting,
    "progress": Progress,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def encode(message: Message) -> bytes:
    # vars(), not dataclasses.asdict(): no deep copy of every field, per job
    # (`python -m bench profile`); the fields are plain values, lists and tuples.
    body = dict(vars(message))
    body["kind"] = _NAMES[type(message)]
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    body = json.loads(line)
    cls = _KINDS[body.pop("kind")]
    if cls is Claimed:
        body["jobs"] = [tuple(job) for job in body["jobs"]]
    message: Message = cls(**body)
    return message


def send(fd: int, *messages: Message) -> None:
    """Write the messages in one write (one wake-up of the master); BrokenPipeError
    means the master is gone. A write larger than PIPE_BUF may be split by the
    kernel: the child's threads send one at a time (pool/child.py `Child.send`)."""
    data = b"".join(encode(message) for message in messages)
    while data:
        written = os.write(fd, data)
        data = data[written:]


class Reader:
    """The master's end of one child's pipe: non-blocking reads, whole lines out."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False
        os.set_blocking(fd, False)

    def read(self) -> list[Message]:
        """Every complete message available now (and those before EOF)."""
        while not self.closed:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [decode(line) for line in lines if line.strip()]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.closed = True
