"""The pool's pure logic: exit statuses in words, the message protocol, the polling."""

from __future__ import annotations

import faulthandler
import os
import signal
import time

import pytest

from skiplock.pool import protocol
from skiplock.pool.outage import Outage
from skiplock.pool.postmortem import (
    EXIT_BOOT_FAILURE,
    describe_status,
    died_while_running,
    is_boot_failure,
    is_clean_exit,
)
from skiplock.pool.producer import PollInterval


def _status_of(code: int | None = None, sig: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()  # pytest's, inherited: it would print a traceback for SIGSEGV
        if sig is not None:
            os.kill(os.getpid(), sig)
        os._exit(code or 0)
    return os.waitpid(pid, 0)[1]


def test_a_sigkilled_child_reads_as_a_possible_oom_kill() -> None:
    status = _status_of(sig=signal.SIGKILL)
    assert describe_status(status) == "killed by SIGKILL (out of memory?)"
    assert died_while_running(1234, status, 2, 3) == (
        "worker pid 1234 killed by SIGKILL (out of memory?) while running (attempt 2/3)"
    )


def test_a_sigkill_the_master_sent_itself_says_why_instead_of_guessing() -> None:
    status = _status_of(sig=signal.SIGKILL)
    assert describe_status(status, "its lease could not be renewed") == (
        "killed by SIGKILL from the master (its lease could not be renewed)")
    # Another signal is the child's own end, whatever the master meant to do.
    assert describe_status(_status_of(sig=signal.SIGSEGV), "its job overran its timeout") == (
        "killed by SIGSEGV (segmentation fault)")


def test_exit_statuses_read_as_words() -> None:
    assert describe_status(_status_of(17)) == "exited with status 17"
    assert describe_status(_status_of(sig=signal.SIGSEGV)).startswith("killed by SIGSEGV")
    assert is_clean_exit(_status_of(0))
    assert is_boot_failure(_status_of(EXIT_BOOT_FAILURE))
    assert not is_boot_failure(_status_of(1))


def test_messages_survive_the_pipe_in_pieces() -> None:
    read_fd, write_fd = os.pipe()
    reader = protocol.Reader(read_fd)
    started = protocol.Started("j1", "T", "host:1:ab", 2, 3, None)
    claimed = protocol.Claimed([("j1", "host:1:ab", 2), ("j2", "host:1:ab", 1)])
    data = protocol.encode(claimed) + protocol.encode(started)
    os.write(write_fd, data[:10])
    assert reader.read() == []
    os.write(write_fd, data[10:])
    os.close(write_fd)
    assert reader.read() == [claimed, started]
    assert reader.closed
    assert started.ref.attempts == 2 and claimed.refs()[1].id == "j2"
    reader.close()


def test_polling_slows_down_by_steps_and_resets_on_a_job() -> None:
    poll = PollInterval(0.1, 0.35, 0.1)
    waits = [round(poll.after_empty(), 2) for _ in range(5)]
    assert waits == [0.1, 0.2, 0.3, 0.35, 0.35]
    poll.reset()
    assert poll.after_empty() == 0.1


def test_an_outage_backs_off_and_logs_once(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from skiplock.queue_core.errors import DatabaseUnavailable

    outage = Outage("test", logging.getLogger("test.outage"), initial_s=0.1, max_s=0.4)
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        delays = [outage.failed(DatabaseUnavailable("down")) for _ in range(5)]
        outage.succeeded()
    assert delays[0] < delays[2] and max(delays) <= 0.4 * 1.2
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == [
        "database unavailable (down); retrying with back-off",
        "database back after 0.0s",
    ]


def test_a_failed_fork_backs_the_slot_off_instead_of_stopping_the_pool(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from skiplock.pool.master import Master
    from skiplock.queue_core.config import load_settings

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    master = Master(load_settings(concurrency=2))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):  # at once, at once again, then not before 0.5 s
        master.spawn_missing()
    assert master.children == {}
    assert master.crashes == {0: 2, 1: 2}
    assert len(os.listdir("/proc/self/fd")) == before  # the pipes were closed
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # signals unblocked again


def test_two_pipes_give_one_order_whatever_was_read_first() -> None:
    loud_r, loud_w = os.pipe()
    quiet_r, quiet_w = os.pipe()
    sender = protocol.Sender(loud_w, quiet_w)
    reader = protocol.Reader(loud_r, quiet_r)
    a = protocol.Started("a", "T", "host:1:ab", 1, 3, None, 1.0, 2.0)
    fin_a = protocol.Finished("a", "completed", 0.01, "T")
    b = protocol.Started("b", "T", "host:1:ab", 1, 3, None)
    claimed = protocol.Claimed([("c", "host:1:ab", 1)])
    sender.send_quiet(a)
    sender.send(fin_a)
    sender.send_quiet(b)
    assert reader.read() == [a, fin_a, b]
    # A loud message still in transit holds back the quiet ones sent after it.
    os.write(quiet_w, protocol.encode(protocol.Started("d", "T", "host:1:ab", 1, 3, None), 5))
    assert reader.read() == []
    os.write(loud_w, protocol.encode(claimed, 4))
    assert [m.id if isinstance(m, protocol.Started) else m for m in reader.read()] == [claimed, "d"]
    for fd in (loud_w, quiet_w):
        os.close(fd)
    assert reader.read() == [] and reader.closed
    reader.close()


def test_a_full_quiet_pipe_sends_the_loud_way_in_order() -> None:
    loud_r, loud_w = os.pipe()
    quiet_r, quiet_w = os.pipe()
    sender = protocol.Sender(loud_w, quiet_w)
    reader = protocol.Reader(loud_r, quiet_r)
    started = [protocol.Started(f"job{i:05d}", "T" * 150, "host:1:ab", 1, 3, None)
               for i in range(600)]  # about 180 KB: more than a pipe holds (64 KB)
    for message in started[:300]:
        sender.send_quiet(message)
    got = reader.read()  # frees the quiet pipe; the loud one got what did not fit
    for message in started[300:]:
        sender.send_quiet(message)
    for fd in (loud_w, quiet_w):
        os.close(fd)
    got += reader.read()
    assert got == started
    reader.close()


def test_a_message_too_long_for_one_atomic_write_goes_the_loud_way() -> None:
    loud_r, loud_w = os.pipe()
    quiet_r, quiet_w = os.pipe()
    sender = protocol.Sender(loud_w, quiet_w)
    long = protocol.Progress("j", 0.5, "x" * 10_000)
    sender.send_quiet(long)
    os.set_blocking(quiet_r, False)
    with pytest.raises(BlockingIOError):  # nothing there, as it should be
        os.read(quiet_r, 100)
    assert protocol.decode(os.read(loud_r, 65536).rstrip(b"\n")) == long
    for fd in (loud_r, loud_w, quiet_r, quiet_w):
        os.close(fd)


def test_no_outcome_waits_for_its_commit_longer_than_the_delay() -> None:
    # What a child's crash repeats is what waits for a commit: never more than the
    # delay's worth, whether the jobs wrote to the database or not.
    import time
    from typing import Any, cast

    from skiplock.pool.group_commit import Group, Outcome

    for touched in (False, True):
        group = Group(0.01)
        group.touched = touched
        group.add(Outcome(cast(Any, None), 0.001, time.monotonic()))
        assert not group.due(0.001)  # a short job next: the outcome still commits in time
        assert group.due(0.02)  # a 20 ms job would keep it waiting past 10 ms
        assert group.due(None)  # a job of a type not seen yet may run long
        aged = Group(0.01)
        aged.touched = touched
        aged.add(Outcome(cast(Any, None), 0.001, time.monotonic() - 0.02))
        assert aged.due(0.0001)  # it has waited past the delay already
    per_job = Group(0.0)
    per_job.add(Outcome(cast(Any, None), 0.01, time.monotonic()))
    assert per_job.due(0.0)  # 0 commits after every job


def test_the_messages_sent_for_every_job_decode_to_what_was_sent() -> None:
    # `started` and `finished` are formatted by hand (pool/protocol.py); a line must
    # decode to the message, and read the same as the general encoder's would.
    import json
    import math

    def general(message: protocol.Message, seq: int | None) -> dict[str, object]:
        body: dict[str, object] = {**vars(message), "kind": type(message).__name__.lower()}
        if seq is not None:
            body["seq"] = seq
        return body

    hostile = ['a"b\\c', "\n\t\x00\x1f", "é☃\U0001f600", "\ud800", "</script>", "{}[],:", "", "NULL"]
    numbers: list[float | None] = [None, 0, 30, 2.5, 1e-300, 1e300, -0.0,
                                   float("inf"), float("nan")]
    messages: list[protocol.Message] = []
    for text in hostile:
        messages += [protocol.Started(text, text, text, 1, 3, n, 1.5, 1_796_000_000.123456)
                     for n in numbers]
        messages += [protocol.Finished(text, "completed", n if n is not None else 0.0, text)
                     for n in numbers]
    messages.append(protocol.Started("j", "T", "w", True, 3, None, None, None))
    for message in messages:
        for seq in (None, 7):
            line = protocol.encode(message, seq)
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            got_seq, got = protocol.decode_numbered(line.rstrip(b"\n"))
            assert got_seq == seq and type(got) is type(message)
            for field, value in vars(message).items():
                decoded = getattr(got, field)
                if isinstance(value, float) and math.isnan(value):
                    assert math.isnan(decoded)
                else:
                    assert decoded == value and type(decoded) is type(value), (field, line)
            reference = json.loads(json.dumps(general(message, seq)))
            assert json.dumps(json.loads(line), sort_keys=True) == \
                json.dumps(reference, sort_keys=True)


def test_a_started_prepared_with_its_batch_reads_as_one_encoded_when_the_job_starts() -> None:
    # The child encodes a batch's `started` lines before its jobs run and adds the
    # times when each starts (protocol.PreparedStarted): the master must read the same
    # message, in the same order, as if it had been encoded whole then.
    hostile = ['a"b\\c', "\n\t\x00\x1f", "é☃\U0001f600", "\ud800", "", "NULL"]
    timeouts: list[float | None] = [None, 30, 2.5, float("inf"), float("nan")]
    loud_r, loud_w = os.pipe()
    quiet_r, quiet_w = os.pipe()
    sender = protocol.Sender(loud_w, quiet_w)
    reader = protocol.Reader(loud_r, quiet_r)
    expected: list[protocol.Message] = []
    for text in hostile:
        for timeout in timeouts:
            for attempt in (1, True):  # a bool is not a plain number: the general path
                started = protocol.Started(text, text, text, attempt, 3, timeout)
                at, at_wall = time.monotonic(), time.time()
                sender.send_started(protocol.PreparedStarted(started), at, at_wall)
                expected.append(protocol.Started(text, text, text, attempt, 3, timeout,
                                                 at, at_wall))
                finished = protocol.Finished(text, "completed", 0.01, text)
                sender.send(finished)
                expected.append(finished)
    for fd in (loud_w, quiet_w):
        os.close(fd)
    got = reader.read()
    reader.close()
    assert len(got) == len(expected)
    for message, wanted in zip(got, expected, strict=True):
        assert type(message) is type(wanted)
        for field, value in vars(wanted).items():
            decoded = getattr(message, field)
            if isinstance(value, float) and value != value:  # nan
                assert decoded != decoded
            else:
                assert decoded == value and type(decoded) is type(value), field
