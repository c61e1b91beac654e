"""The chains end to end through a running pool (`skiplock worker`), also when children die."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from skiplock.handlers.demo import pending_jobs, seed_demo
from skiplock.queue_core.database import db
from tests.handlers.chains import assert_chains_complete

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 90


def _worker(database_url: str, log: Path, *extra_env: tuple[str, str]) -> (
        subprocess.Popen[bytes]):
    env = {**os.environ, "DATABASE_URL": database_url, "SKIPLOCK_CONCURRENCY": "2",
           "SKIPLOCK_POLL_MAX_S": "0.2", **dict(extra_env)}
    # The log goes to a file: a pipe nobody reads would fill up and block the pool.
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "skiplock", "worker"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture
def worker(database_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        _stop(proc)


def _wait_drained(user_id: str, proc: subprocess.Popen[bytes], log: Path,
                  hurry_retries: bool) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited: {log.read_text()[-2000:]}")
        if hurry_retries:
            # A crashed job waits out its backoff (10 s); bring its retry forward.
            with db.get_engine().begin() as conn:
                conn.execute(text("""UPDATE "WorkerJob" SET "availableAt" = now()
                                     WHERE status = 'PENDING' AND attempts > 0
                                       AND "availableAt" > now()"""))
        if pending_jobs(user_id) == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{pending_jobs(user_id)} jobs still pending after {DEADLINE_S}s: "
                         f"{log.read_text()[-2000:]}")


def test_chains_complete_through_the_pool(database_url, worker, tmp_path):
    seeded = seed_demo("Europe/Paris", days=7, today=date(2026, 3, 30))  # across the DST change
    log = tmp_path / "worker.log"
    worker.append(_worker(database_url, log))
    _wait_drained(seeded.user_id, worker[0], log, hurry_retries=False)
    assert_chains_complete(seeded)


def test_children_killed_mid_chain_leave_no_duplicates(database_url, worker, tmp_path):
    seeded = seed_demo("Asia/Tokyo", days=4, today=date(2027, 1, 2))  # ISO week 53 of 2026
    markers = tmp_path / "crashed"
    markers.mkdir()
    log = tmp_path / "worker.log"
    worker.append(_worker(database_url, log, ("SKIPLOCK_HANDLERS", "tests.handlers.crash_once"),
                          ("SKIPLOCK_CRASH_DIR", str(markers))))
    _wait_drained(seeded.user_id, worker[0], log, hurry_retries=True)
    crashed = sorted(p.name.removeprefix("crashed-") for p in markers.iterdir())
    assert crashed == sorted(["INTERPRET_EVENT", "DETECT_PATTERNS", "GENERATE_INSIGHTS",
                              "GENERATE_REVIEW", "GENERATE_TOMORROW_PLAN",
                              "SUGGEST_UOM_UPDATE"])
    with db.get_engine().connect() as conn:
        retried = conn.execute(text("""SELECT type, attempts, "lastError" FROM "WorkerJob"
                                       WHERE "userId" = :u AND attempts > 1"""),
                               {"u": seeded.user_id}).all()
    assert sorted(r.type for r in retried) == crashed  # each crash cost its job one attempt
    assert all(r.attempts == 2 for r in retried)
    assert all("SIGKILL" in (r.lastError or "") for r in retried), [r.lastError for r in retried]
    assert_chains_complete(seeded)


def test_demo_command_runs_every_chain_and_reports_each_step(database_url):
    env = {**os.environ, "DATABASE_URL": database_url, "SKIPLOCK_POLL_MAX_S": "0.2"}
    result = subprocess.run([sys.executable, "-m", "skiplock", "demo", "--weeks", "1",
                             "--concurrency", "2", "--timeout", "60"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120,
                            start_new_session=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for step in ("INTERPRET_EVENT:", "DETECT_PATTERNS:", "GENERATE_INSIGHTS:",
                 "GENERATE_REVIEW:", "GENERATE_TOMORROW_PLAN:", "SUGGEST_UOM_UPDATE:"):
        assert any(line.startswith(step) for line in result.stdout.splitlines()), step
    assert " jobs in " in result.stdout and "dead letters" not in result.stdout


def test_jobs_that_can_never_run_are_dead_lettered_at_once(database_url, worker, tmp_path):
    """Rows written by another service skip enqueue's checks: the pool's must catch them."""
    with db.get_engine().begin() as conn:
        for job_id, job_type, payload in [
            ("bad-field", "GENERATE_REVIEW", '{"userId": "u", "type": "DAILY", '
             '"periodKey": "2026-W10", "timezone": "Europe/Paris"}'),
            ("bad-zone", "GENERATE_REVIEW", '{"userId": "u", "type": "DAILY", '
             '"periodKey": "2026-03-10", "timezone": "Moon/Base"}'),
            ("no-event", "INTERPRET_EVENT", '{"eventId": "nope"}'),
            ("no-user", "SUGGEST_UOM_UPDATE", '{"userId": "nope", "dailyPlanId": "p"}'),
        ]:
            conn.execute(text("""INSERT INTO "WorkerJob" (id, type, payload)
                                 VALUES (:id, :type, CAST(:payload AS jsonb))"""),
                         {"id": job_id, "type": job_type, "payload": payload})
    log = tmp_path / "worker.log"
    worker.append(_worker(database_url, log))
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        with db.get_engine().connect() as conn:
            jobs = {r.id: r for r in conn.execute(text(
                """SELECT id, status::text AS status, attempts, "lastError" FROM "WorkerJob"
                   WHERE status = 'DEAD_LETTER'"""))}
        if len(jobs) == 4:
            break
        time.sleep(0.2)
    assert len(jobs) == 4, log.read_text()[-2000:]
    assert all(j.attempts == 1 for j in jobs.values())
    assert "periodKey" in jobs["bad-field"].lastError
    assert "timezone" in jobs["bad-zone"].lastError
    assert "event 'nope' does not exist" in jobs["no-event"].lastError
    assert "user 'nope' does not exist" in jobs["no-user"].lastError
