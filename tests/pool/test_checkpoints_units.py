"""A checkpoint's way from a child to the row, fast: its message on the pipes, the
child's throttle, and the master writing it with a heartbeat or with the
settlement of a child that died (real pipes and a real job table, no fork; the
master as tests/pool/test_master_decisions.py drives it)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from skiplock.pool import protocol
from skiplock.pool.progress_reporter import MIN_INTERVAL_S, CheckpointReporter
from skiplock.queue_core.features.checkpoints import MAX_CHECKPOINT_BYTES
from tests.pool.test_master_decisions import (
    EXITED_ABORTED,
    KILLED_BY_SIGKILL,
    Harness,
    row,
)
from tests.support import wait_for

HOSTILE = ['{"next":90}', '"quote \\" backslash \\\\ slash / é 😀 \\u2028"', "null",
           json.dumps({"k": "\"" * (MAX_CHECKPOINT_BYTES - 12)})]


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    yield h
    h.close()


@pytest.mark.parametrize("state", HOSTILE, ids=["cursor", "escapes", "null", "all-quotes"])
def test_a_checkpoint_message_decodes_to_what_was_sent(state: str) -> None:
    message = protocol.Checkpoint("j1", state)
    for seq in (None, 7):
        line = protocol.encode(message, seq)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert protocol.decode_numbered(line.rstrip(b"\n")) == (seq, message)


def test_a_long_checkpoint_goes_the_loud_way_in_its_place_between_the_jobs_messages() -> None:
    loud_r, loud_w = os.pipe()
    quiet_r, quiet_w = os.pipe()
    sender = protocol.Sender(loud_w, quiet_w)
    reader = protocol.Reader(loud_r, quiet_r)
    started = protocol.Started("j1", "T", "host:1:ab", 1, 3, None, 1.0, 2.0)
    short, long = protocol.Checkpoint("j1", HOSTILE[0]), protocol.Checkpoint("j1", HOSTILE[3])
    assert len(protocol.encode(long, 1)) > 2 * MAX_CHECKPOINT_BYTES  # every quote escaped
    sender.send_quiet(started)
    sender.send_quiet(short)
    sender.send_quiet(long)  # longer than PIPE_BUF: through the loud pipe
    sender.send_quiet(protocol.Progress("j1", 0.5, None))
    got = []
    while len(got) < 4:
        got += reader.read()
    assert got == [started, short, long, protocol.Progress("j1", 0.5, None)]
    for fd in (loud_r, loud_w, quiet_r, quiet_w):
        os.close(fd)


class Sent:
    """What a reporter sent, as the child's pipe would take it."""

    def __init__(self) -> None:
        self.messages: list[protocol.Message] = []
        self.lock = threading.Lock()

    def __call__(self, message: protocol.Message) -> None:
        with self.lock:
            self.messages.append(message)

    def states(self) -> list[Any]:
        with self.lock:
            return [m.state for m in self.messages if isinstance(m, protocol.Checkpoint)]


def test_the_child_sends_the_first_checkpoint_at_once_and_the_latest_after_the_interval(
) -> None:
    sent = Sent()
    reporter = CheckpointReporter(sent)
    reporter("0")  # no job: nothing to send
    reporter.start("j1")
    for i in range(1, 1000):  # a handler that checkpoints every step of a tight loop
        reporter(str(i))
    assert sent.states() == ["1"]
    wait_for(lambda: sent.states() == ["1", "999"], 5 + MIN_INTERVAL_S,
             "the timer to send the latest")
    assert {m.id for m in sent.messages} == {"j1"}


def test_an_exiting_child_sends_what_it_kept_and_never_another_jobs() -> None:
    sent = Sent()
    reporter = CheckpointReporter(sent)
    reporter.start("j1")
    reporter("1")
    reporter("2")  # kept: too soon after the first
    reporter.flush()  # the child exits (QUIT): what it kept goes first
    assert sent.states() == ["1", "2"]
    reporter("3")
    reporter.start("j2")  # the next job: j1's kept checkpoint is dropped
    reporter.flush()
    assert sent.states() == ["1", "2"]


# -- the master ---------------------------------------------------------------------


def test_the_master_writes_the_latest_checkpoint_with_the_next_heartbeat(
    harness: Harness,
) -> None:
    child = harness.child(0, 201)
    job = harness.run_job(child)
    harness.say(child, protocol.Checkpoint(job.id, '{"next":1}'))
    harness.say(child, protocol.Checkpoint(job.id, '{"next":2}'))
    harness.say(child, protocol.Checkpoint("another job", '{"next":9}'))  # not its job
    assert row(job.id).checkpoint is None  # not yet: no statement of its own
    harness.clock.advance(0.1)
    harness.master.maintain()
    assert row(job.id).checkpoint == {"next": 2}
    assert harness.master.heartbeats.checkpoints == {}  # written: not sent again
    harness.clock.advance(0.5)
    harness.master.maintain()  # nothing new: NULL keeps it
    assert row(job.id).checkpoint == {"next": 2}
    harness.dies(child, EXITED_ABORTED)


@pytest.mark.parametrize(("status", "st", "attempts", "interruptions"), [
    (EXITED_ABORTED, "PENDING", 0, 1),  # QUIT: abandoned, a free interruption
    (KILLED_BY_SIGKILL, "PENDING", 1, None),  # died: an attempt
], ids=["stopped", "killed"])
def test_a_checkpoint_still_in_the_pipe_when_the_child_died_goes_with_its_settlement(
    harness: Harness, status: int, st: str, attempts: int, interruptions: int | None,
) -> None:
    child = harness.child(0, 202)
    job = harness.run_job(child)
    harness.say(child, protocol.Checkpoint(job.id, '{"next":50}'))
    harness.clock.advance(0.1)
    harness.master.maintain()
    assert row(job.id).checkpoint == {"next": 50}
    if status == EXITED_ABORTED:
        harness.master.begin_stop("SIGQUIT")
        assert harness.signals_to(child) == [signal.SIGQUIT]
    # Its last words, unread (the master reads the pipes at its next turn), then it
    # is gone before any heartbeat.
    protocol.send(harness.pipes[child.pid], protocol.Checkpoint(job.id, '{"next":91}'))
    harness.dies(child, status)
    r = row(job.id)
    assert (r.st, r.attempts, r.interruptions) == (st, attempts, interruptions)
    assert r.checkpoint == {"next": 91}


def test_the_jobs_that_waited_for_their_commit_keep_their_checkpoints_too(
    harness: Harness,
) -> None:
    child = harness.child(0, 203)
    first = harness.run_job(child)
    harness.say(child, protocol.Checkpoint(first.id, '{"next":100}'))
    second = harness.run_job(child)  # the first ran to its end and waits for the commit
    harness.say(child, protocol.Checkpoint(first.id, '{"next":101}'))  # late: ignored
    harness.dies(child, KILLED_BY_SIGKILL)
    assert (row(first.id).st, row(first.id).interruptions) == ("PENDING", 1)
    assert row(first.id).checkpoint == {"next": 100}
    assert row(second.id).checkpoint is None


def test_a_finished_job_is_forgotten(harness: Harness) -> None:
    child = harness.child(0, 204)
    job = harness.run_job(child)
    harness.say(child, protocol.Checkpoint(job.id, '{"next":1}'))
    harness.say(child, protocol.Finished(job.id, "completed", 0.1, "T"))
    assert child.checkpoints == {}
    harness.dies(child, 0)
