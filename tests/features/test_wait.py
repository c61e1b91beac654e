"""Waiting on a job: woken by its end (LISTEN) or polling, on a real database; and
`skiplock enqueue --wait` against a real pool."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from skiplock import cancel, claim, complete, enqueue, fail, wait
from skiplock.queue_core.errors import JobNotFound, WaitTimeout
from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import REPO, Jobs, Pool, worker_env
from tests.queue_core.helpers import row
from tests.support import wait_for


def _finish_later(job_id: str, how: Callable[[object], object], after: float = 0.3) -> None:
    def run() -> None:
        # The waiter's mark locks the row for an instant, and a claim skips locked rows.
        jobs = wait_for(lambda: claim("w"), 10, "the job to be claimed")
        assert [job.id for job in jobs] == [job_id]
        [job] = jobs
        time.sleep(after)
        how(job)

    threading.Thread(target=run, daemon=True).start()


@pytest.mark.parametrize("listen", [True, False])
def test_wait_returns_the_completed_job_with_its_result(listen: bool):
    job_id = enqueue("WAITED", {})
    _finish_later(job_id, lambda job: complete(job, {"answer": 42}))
    job = wait(job_id, timeout=20, listen=listen)
    assert (job.status, job.result) == ("COMPLETED", {"answer": 42})
    assert row(job_id).notifyDone is True


def test_a_retry_is_not_an_end_but_a_dead_letter_and_a_cancel_are():
    job_id = enqueue("WAITED", {}, max_attempts=1)
    _finish_later(job_id, lambda job: fail(job, "boom", retry=False))
    job = wait(job_id, timeout=20)
    assert (job.status, job.last_error) == ("DEAD_LETTER", "boom")
    other = enqueue("WAITED", {}, max_attempts=3)
    [running] = claim("w")
    assert fail(running, "transient", retry=True) == "PENDING"
    with pytest.raises(WaitTimeout, match="still PENDING after 0.3s"):
        wait(other, timeout=0.3)
    cancel(other, by="t")
    assert wait(other, timeout=5).status == "FAILED"


def test_waiting_on_an_unknown_job_says_so():
    with pytest.raises(JobNotFound):
        wait("no-such-job", timeout=1)


def test_enqueue_wait_prints_the_result_or_the_error_and_exits_by_outcome(
    start_pool: Callable[..., Pool], jobs: Jobs, database_url: str, tmp_path
) -> None:
    start_pool("--concurrency", "1", handlers=FEATURE_HANDLERS)
    env = worker_env(database_url, tmp_path / "home")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skiplock", "enqueue", *args,
                               "--handlers", FEATURE_HANDLERS, "--wait", "--timeout", "60s"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=90)

    ok = cli("TEST_RECORD", "{}")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["pid"] > 0
    job_id = ok.stderr.strip().splitlines()[0]
    assert jobs.get(job_id)["status"] == "COMPLETED"
    bad = cli("TEST_REFUSE", '{"why": "no such thing"}')
    assert bad.returncode == 1 and bad.stdout == ""
    assert "ended DEAD_LETTER: no such thing" in bad.stderr


# -- the timeout holds whatever happens around the wait ------------------------------------

@pytest.fixture
def row_locked() -> Iterator[Callable[[str], None]]:
    """Lock a job's row in a transaction of another session, as an operator's open
    `SELECT ... FOR UPDATE` would; released at the end of the test, or after 15 s so that
    a wait that does not keep its timeout fails instead of hanging."""
    from skiplock.queue_core.database import db

    conn = db.get_engine().connect()
    trans = conn.begin()
    release = threading.Timer(15, lambda: conn.invalidate())

    def lock(job_id: str) -> None:
        conn.execute(text('SELECT 1 FROM "WorkerJob" WHERE id = :id FOR UPDATE'), {"id": job_id})
        release.start()

    try:
        yield lock
    finally:
        release.cancel()
        with contextlib.suppress(Exception):
            trans.rollback()
        conn.close()


@pytest.mark.parametrize("listen", [True, False])
def test_a_row_lock_on_the_job_does_not_outlast_the_timeout(row_locked, listen: bool):
    job_id = enqueue("WAITED", {})
    row_locked(job_id)
    began = time.monotonic()
    with pytest.raises(WaitTimeout, match=f"job {job_id} is still PENDING after 1s"):
        wait(job_id, timeout=1, listen=listen)
    assert time.monotonic() - began < 3


class Alarm(Exception):
    """What the caller's own SIGALRM handler raises."""


@pytest.fixture
def alarm() -> Iterator[Callable[[float], None]]:
    def ring(signum: int, frame: object) -> None:
        raise Alarm("time is up")

    previous = signal.signal(signal.SIGALRM, ring)
    try:
        yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("listen", [True, False])
def test_an_exception_from_the_callers_signal_handler_comes_out_of_wait(alarm, listen: bool):
    job_id = enqueue("WAITED", {})
    alarm(0.5)
    began = time.monotonic()
    with pytest.raises(Alarm):
        wait(job_id, timeout=10, listen=listen)
    assert time.monotonic() - began < 3


@pytest.mark.parametrize("timeout", [float("nan"), -1, -0.5, float("-inf")])
def test_a_timeout_that_is_not_a_duration_is_refused(timeout: float):
    job_id = enqueue("WAITED", {})
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds >= 0"):
        wait(job_id, timeout=timeout)
    for poll in ({"poll_min": float("nan")}, {"poll_max": 0}, {"poll_min": 3, "poll_max": 1}):
        with pytest.raises(ValueError, match="poll_"):
            wait(job_id, timeout=1, **poll)


def test_an_infinite_timeout_waits_as_long_as_it_takes():
    job_id = enqueue("WAITED", {})
    _finish_later(job_id, lambda job: complete(job, None), after=0.1)
    assert wait(job_id, timeout=float("inf")).status == "COMPLETED"
