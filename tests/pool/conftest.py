"""Fixtures of the pool tests: real worker processes against a real PostgreSQL.

Each pool is `python -m skiplock worker` in a session of its own (so the test
can signal it and kill its whole process group in teardown), logging to a file
under the test's tmp_path. Tests wait by polling a database fact or a log line
to a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]
SAMPLE_HANDLERS = "tests.pool.sample_handlers"
DEFAULT_FLAGS = {
    "--concurrency": "2",
    "--heartbeat": "0.5",
    "--graceful-timeout": "10",
    "--poll-max": "0.5",
}

_TABLES = """
CREATE TABLE IF NOT EXISTS pool_test_runs (
    job_id text NOT NULL, pid integer NOT NULL,
    started timestamptz NOT NULL, finished timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS pool_test_starts (
    job_id text NOT NULL, pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def in_group(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (what a test left running)."""
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return sorted(found)


def workers_of(pid: int) -> list[int]:
    """The worker children of master `pid`, by their title: not the short-lived process
    that loads the handler modules at start and on HUP (pool/served.py), nor a child
    forked a moment ago that has not yet set its title."""
    found = []
    for child in children_of(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if cmdline.read().startswith(b"skiplock: worker"):
                    found.append(child)
        except OSError:
            continue
    return found


class Pool:
    """One `skiplock worker` process under test."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skiplock", "worker", *args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def children(self) -> list[int]:
        return workers_of(self.pid)

    def wait_children(self, count: int, timeout: float = 15) -> list[int]:
        return wait_for(lambda: (c := self.children()) and len(c) == count and c,
                        timeout, f"{count} worker children")

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the pool did not exit within {timeout}s; log:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15, count: int = 1) -> str:
        return wait_for(lambda: self.log().count(needle) >= count and self.log(), timeout,
                        f"{needle!r} in the pool's log")

    def kill(self) -> None:
        """Kill the pool's whole process group; fail if anything of it lingers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        try:
            self.proc.wait(10)
            wait_for(lambda: not in_group(self.pid), 5, f"process group {self.pid} to be empty")
        finally:
            self._log.close()


class Jobs:
    """The job table and the test tables, as the tests read and write them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enqueue(self, job_type: str, payload: dict[str, Any] | None = None, **options: Any) -> str:
        from skiplock.queue_core import enqueue

        with self.engine.begin() as conn:
            return enqueue(job_type, payload or {}, conn=conn, **options)

    def get(self, job_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text('SELECT * FROM "WorkerJob" WHERE id = :id'),
                                {"id": job_id}).mappings().one()

    def statuses(self, job_type: str | None = None) -> Counter[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(text('SELECT status::text FROM "WorkerJob" '
                                     'WHERE :t IS NULL OR type = :t'), {"t": job_type})
            return Counter(row[0] for row in rows)

    def all_done(self, total: int, job_type: str | None = None) -> bool:
        return self.statuses(job_type).get("COMPLETED", 0) == total

    def runs(self) -> Counter[str]:
        """Committed runs per job id."""
        with self.engine.connect() as conn:
            return Counter(row[0] for row in conn.execute(text("SELECT job_id FROM pool_test_runs")))

    def run_rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text("SELECT * FROM pool_test_runs")).mappings())

    def starts(self, job_id: str) -> list[int]:
        """Pids that started the job, in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT pid FROM pool_test_starts WHERE job_id = :j "
                                     "ORDER BY at"), {"j": job_id})
            return [row[0] for row in rows]

    def hurry(self) -> None:
        """Make retries due now: the tests check what happens, not the backoff's length."""
        with self.engine.begin() as conn:
            conn.execute(text('UPDATE "WorkerJob" SET "availableAt" = now() '
                              "WHERE status = 'PENDING' AND \"availableAt\" > now()"))

    def all_done_hurried(self, total: int, job_type: str | None = None) -> bool:
        """all_done, once the retries waiting out a back-off were made due (hurry)."""
        self.hurry()
        return self.all_done(total, job_type)

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)


@pytest.fixture(scope="session")
def pool_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    with engine.begin() as conn:
        for statement in _TABLES.split(";"):
            if statement.strip():
                conn.execute(text(statement))
    yield engine
    engine.dispose()


@pytest.fixture
def jobs(pool_engine: Engine) -> Jobs:
    # Empty already: tests/conftest.py's clean_tables emptied every table before the test.
    return Jobs(pool_engine)


def worker_env(database_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPLOCK_")}
    env.update(DATABASE_URL=database_url, PYTHONPATH=str(REPO), SKIPLOCK_HOME=str(home),
               PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def start_pool(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    """start_pool("--concurrency", "1", ...) -> Pool; every pool is killed in teardown."""
    pools: list[Pool] = []

    def start(*args: str, handlers: str | None = SAMPLE_HANDLERS, url: str | None = None,
              env: dict[str, str] | None = None) -> Pool:
        argv = list(args)
        given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
        for key, value in DEFAULT_FLAGS.items():
            if key not in given:
                argv += [key, value]
        if handlers:
            argv += ["--handlers", handlers]
        full_env = worker_env(url or database_url, tmp_path / "home")
        full_env.update(env or {})
        pool = Pool(argv, full_env, tmp_path / f"pool-{len(pools)}.log")
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.kill()
