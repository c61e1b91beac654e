"""What a child tells its master, over two pipes of its own.

One JSON object per line. The master needs to know which job each child holds
so that it can send the heartbeats, enforce the timeout, and settle the job if
the child dies; everything else it learns from `waitpid`. The messages are
small (well under PIPE_BUF, so a write is atomic), and a child writes only to
its own pipes, so lines never interleave. Signals go the other way: TERM
(finish the job, then exit) and QUIT (abandon the job now).

Two pipes, one order. What the master must act on soon (a claim, a committed
outcome, boot and exit) goes through the pipe it waits on, and wakes it. A
`started` per job (and a handler's progress and checkpoints) goes through a
quiet pipe that the master only reads at its next turn or when it reaps the
child (so a checkpoint sent just before the child died is still read): waking the
master once per job cost CPU-bound jobs a measurable share of the cores
(docs/benchmarks.md, "Figures behind the code"), for news that is needed only
when the child dies, a timeout falls due or a heartbeat is written. Every message carries the child's
sequence number, and the master handles them in that order whichever pipe they
came through (`Reader`). A quiet pipe that is full, or a message too long to
be written atomically, falls back to the loud pipe, in order all the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
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
    # When the handler was called: time.monotonic() (one clock for the host's
    # processes) and the wall clock. The master may read this a turn later, and
    # times the job from here, not from when it heard of it.
    at: float | None = None
    at_wall: float | None = None

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
class Checkpoint:
    """Where the running job's handler last said it was (`skiplock.checkpoint`), as the
    JSON text to store: the master never decodes it, it writes it with the next
    heartbeat, or with the settlement of the job if the child dies first."""

    id: str
    state: str


@dataclass(frozen=True)
class Exiting:
    """The child is about to exit 0 on its own (recycled)."""

    reason: str


Message = Ready | BootFailed | Claimed | Started | Finished | Exiting | Progress | Checkpoint

_KINDS: dict[str, type[Any]] = {
    "ready": Ready,
    "boot_failed": BootFailed,
    "claimed": Claimed,
    "started": Started,
    "finished": Finished,
    "exiting": Exiting,
    "progress": Progress,
    "checkpoint": Checkpoint,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def encode(message: Message, seq: int | None = None) -> bytes:
    if isinstance(message, Started):
        if _plain_numbers(message):
            return _encode_started(message, seq)
    elif isinstance(message, Finished) and _plain_number(message.duration_s):
        return _encode_finished(message, seq)
    # vars(), not dataclasses.asdict(): no deep copy of every field, per job
    # (`python -m bench profile`); the fields are plain values, lists and tuples.
    body = dict(vars(message))
    body["kind"] = _NAMES[type(message)]
    if seq is not None:
        body["seq"] = seq
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


# `started` and `finished` are the messages sent for every job, and a child
# builds them right after a job's body ran, when the code of `json.dumps` has
# gone cold and costs many times what it costs hot; these f-strings cost about
# half as much (docs/benchmarks.md, "Figures behind the code"). The strings go
# through the json module's own C escaping, so a line decodes to the same
# message (tests/pool/test_pool_units.py).
_string = json.encoder.encode_basestring_ascii


def _plain_number(x: float | None) -> bool:
    """Whether repr(x) is JSON: None, or an int or float that is no bool, inf or
    nan (json.dumps writes those its own way, and the general path does)."""
    return x is None or (type(x) in (int, float) and -1e308 < x < 1e308)


def _plain_numbers(m: Started) -> bool:
    return (_plain_number(m.attempt) and _plain_number(m.max_attempts)
            and _plain_number(m.timeout_s) and _plain_number(m.at) and _plain_number(m.at_wall))


def _encode_started(m: Started, seq: int | None) -> bytes:
    return _started_line(_started_head(m), m.at, m.at_wall, seq)


def _started_line(head: str, at: float | None, at_wall: float | None, seq: int | None) -> bytes:
    """`started`'s whole line: its head (`_started_head`), then its times and number."""
    return (head + f'"at":{_json_number(at)},"at_wall":{_json_number(at_wall)}'
            + ("}\n" if seq is None else f',"seq":{seq}}}\n')).encode()


def _started_head(m: Started) -> str:
    """`started`'s line up to its times: all that is known before the job starts."""
    return (f'{{"kind":"started","id":{_string(m.id)},"type":{_string(m.type)},'
            f'"locked_by":{_string(m.locked_by)},"attempt":{_json_number(m.attempt)},'
            f'"max_attempts":{_json_number(m.max_attempts)},'
            f'"timeout_s":{_json_number(m.timeout_s)},')


class PreparedStarted:
    """A job's `started`, encoded but for its times and number when its batch is claimed
    (`Sender.send_started`). Encoded between two job bodies, when the encoder's code
    has gone cold, it cost a child more CPU per job than in one loop over the batch's
    jobs, where the code stays hot (docs/benchmarks.md, "Figures behind the code")."""

    __slots__ = ("message", "head")

    def __init__(self, message: Started) -> None:
        self.message = message
        self.head = _started_head(message) if _plain_numbers(message) else None


def _encode_finished(m: Finished, seq: int | None) -> bytes:
    return (f'{{"kind":"finished","id":{_string(m.id)},"outcome":{_string(m.outcome)},'
            f'"duration_s":{_json_number(m.duration_s)},"type":{_string(m.type)}'
            + ("}\n" if seq is None else f',"seq":{seq}}}\n')).encode()


def _json_number(x: float | None) -> str:
    return "null" if x is None else repr(x)


def decode(line: bytes) -> Message:
    return decode_numbered(line)[1]


def decode_numbered(line: bytes) -> tuple[int | None, Message]:
    return _message(json.loads(line))


def decode_lines(lines: list[bytes]) -> list[tuple[int | None, Message]]:
    """`decode_numbered` of each line, the lines parsed as one JSON array: a batch's
    100 or so lines in one call of the parser's C code instead of 100 calls through
    its Python wrapper, half of what the master spent reading them."""
    if not lines:
        return []
    return [_message(body) for body in json.loads(b"[" + b",".join(lines) + b"]")]


def _message(body: dict[str, Any]) -> tuple[int | None, Message]:
    cls = _KINDS[body.pop("kind")]
    seq = body.pop("seq", None)
    if cls is Claimed:
        body["jobs"] = [tuple(job) for job in body["jobs"]]
    message: Message = cls(**body)
    return seq, message


def send(fd: int, *messages: Message) -> None:
    """Write the messages in one write (one wake-up of the master); BrokenPipeError
    means the master is gone. A write larger than PIPE_BUF may be split by the
    kernel: the child's threads send one at a time (`Sender`)."""
    _write_all(fd, b"".join(encode(message) for message in messages))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class Sender:
    """A child's end of its two pipes: every message numbered, in one order.

    Not thread-safe by itself: the child's threads hold its send lock."""

    def __init__(self, fd: int, quiet_fd: int | None = None) -> None:
        self.fd, self.quiet_fd = fd, quiet_fd
        self.seq = 0
        if quiet_fd is not None:
            os.set_blocking(quiet_fd, False)  # full: the message goes the loud way

    def send(self, *messages: Message) -> None:
        """Through the pipe the master waits on: it wakes up for these."""
        data = []
        for message in messages:
            self.seq += 1
            data.append(encode(message, self.seq))
        _write_all(self.fd, b"".join(data))

    def send_quiet(self, message: Message) -> None:
        """Through the quiet pipe, read at the master's next turn."""
        if self.quiet_fd is None:
            self.send(message)
            return
        self._write_quiet(encode(message, self.seq + 1))

    def send_started(self, prepared: PreparedStarted, at: float, at_wall: float) -> None:
        """`send_quiet` of the prepared `started`, timed `at` (monotonic) and `at_wall`."""
        if prepared.head is None or self.quiet_fd is None or not (
                _plain_number(at) and _plain_number(at_wall)):
            self.send_quiet(dataclasses.replace(prepared.message, at=at, at_wall=at_wall))
            return
        self._write_quiet(_started_line(prepared.head, at, at_wall, self.seq + 1))

    def _write_quiet(self, line: bytes) -> None:
        """Write `line`, numbered `seq + 1`, to the quiet pipe, or the loud one when the
        quiet one is full or the line too long to be written atomically."""
        assert self.quiet_fd is not None
        if len(line) <= select.PIPE_BUF:  # written whole or not at all
            try:
                os.write(self.quiet_fd, line)
            except BlockingIOError:  # the master is behind: wake it with this one
                pass
            else:
                self.seq += 1
                return
        self.seq += 1
        _write_all(self.fd, line)


class _Pipe:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False
        os.set_blocking(fd, False)

    def read(self) -> list[bytes]:
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
        return [line for line in lines if line.strip()]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.closed = True


class Reader:
    """The master's end of one child's pipes: non-blocking reads, whole messages out,
    in the order the child sent them.

    The loud pipe is read first: a quiet message sent before anything read from it
    is then surely in the quiet pipe. Numbered messages are handed out only in an
    unbroken run of sequence numbers; one whose predecessor is still in transit
    waits for the next read. Unnumbered ones (a test's) go out as they come."""

    def __init__(self, fd: int, quiet_fd: int | None = None) -> None:
        self.loud = _Pipe(fd)
        self.quiet = _Pipe(quiet_fd) if quiet_fd is not None else None
        self.next_seq = 1
        self.waiting: dict[int, Message] = {}

    @property
    def fd(self) -> int:
        """The descriptor the master waits on."""
        return self.loud.fd

    @property
    def closed(self) -> bool:
        return self.loud.closed

    def read(self) -> list[Message]:
        """Every message available now, in order (and all of them once the child is gone)."""
        out: list[Message] = []
        lines = self.loud.read()
        if self.quiet is not None:
            lines += self.quiet.read()
        for seq, message in decode_lines(lines):
            if seq is None:
                out.append(message)
            else:
                self.waiting[seq] = message
        while self.next_seq in self.waiting:
            out.append(self.waiting.pop(self.next_seq))
            self.next_seq += 1
        if self.waiting and self.loud.closed and (self.quiet is None or self.quiet.closed):
            # The child is gone: nothing more will come; what is here is all there is.
            for seq in sorted(self.waiting):
                out.append(self.waiting.pop(seq))
        return out

    def close(self) -> None:
        self.loud.close()
        if self.quiet is not None:
            self.quiet.close()
