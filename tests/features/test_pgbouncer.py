"""The job features behind a real PgBouncer in transaction mode, where no session state
survives a transaction and LISTEN hears nothing: a pool with `--no-listen` and the
command line, both through the pooler."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import REPO, Jobs, Pool, worker_env
from tests.pool.pgbouncer import find_or_install
from tests.support import free_port, wait_for

# PgBouncer is installed from Debian's packages when it is missing (tests/pool/
# pgbouncer.py), never skipped: on a fresh machine a skip would hide these tests.
pytestmark = [pytest.mark.timeout(420)]


@pytest.fixture
def bouncer_url(database_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test database, 3 server connections."""
    url = make_url(database_url)
    if url.host not in ("127.0.0.1", "localhost"):
        pytest.skip("the test database is not on a TCP port PgBouncer can reach")
    folder = Path(tempfile.mkdtemp(prefix="skiplock-pgbouncer-"))
    port = free_port()
    user = url.username or "postgres"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(f"""
[databases]
* = host={url.host} port={url.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
logfile = {folder}/pgbouncer.log
""")
    argv = [find_or_install(), str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        folder.chmod(0o755)
        shutil.chown(folder, "postgres")
        for name in ("users.txt", "pgbouncer.ini"):
            shutil.chown(folder / name, "postgres")
        argv[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    through = url.set(port=port, password=None).render_as_string(hide_password=False)
    engine = create_engine(through, poolclass=None)

    def answers() -> bool:
        try:
            with engine.connect() as conn:
                return conn.execute(text("SELECT 1")).scalar() == 1
        except Exception:  # not listening yet
            return False

    try:
        wait_for(answers, 10, "PgBouncer to accept connections")
        engine.dispose()
        yield through
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_cancel_limits_wait_and_progress_work_through_pgbouncer_in_transaction_mode(
    bouncer_url: str, start_pool: Callable[..., Pool], jobs: Jobs, tmp_path: Path
) -> None:
    start_pool("--concurrency", "2", "--no-listen", "--poll-max", "0.3",
               handlers=FEATURE_HANDLERS, url=bouncer_url)
    env = worker_env(bouncer_url, tmp_path / "home")

    def cli(*args: str, listen: bool = False) -> subprocess.CompletedProcess[str]:
        run_env = dict(env) if listen else {**env, "SKIPLOCK_LISTEN": "0"}
        return subprocess.run([sys.executable, "-m", "skiplock", *args], cwd=REPO, env=run_env,
                              capture_output=True, text=True, timeout=90)

    def enqueue(*args: str) -> str:
        done = cli("enqueue", *args, "--handlers", FEATURE_HANDLERS)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    # Results to wait on: polling, and (misconfigured) with a LISTEN that hears nothing.
    for listen in (False, True):
        waited = cli("enqueue", "TEST_RECORD", "{}", "--handlers", FEATURE_HANDLERS, "--wait",
                     "--timeout", "60s", listen=listen)
        assert waited.returncode == 0, waited.stderr
        assert '"pid"' in waited.stdout

    # Concurrency limits: the triggers run inside the pooled transactions; two children,
    # one slot, so the four runs never overlap.
    batch = subprocess.run(
        [sys.executable, "-c", "import skiplock; print(' '.join(skiplock.enqueue_many("
         "[{'type': 'TEST_RECORD', 'payload': {'seconds': 0.3}, 'concurrency_key': 'b', "
         "'concurrency': 1}] * 4)))"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert batch.returncode == 0, batch.stderr
    keyed = batch.stdout.split()
    wait_for(lambda: all(jobs.get(i)["status"] == "COMPLETED" for i in keyed), 30,
             "the keyed jobs to complete")
    runs = sorted((r["started"], r["finished"]) for r in jobs.run_rows()
                  if r["job_id"] in keyed)
    assert len(runs) == 4
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(runs, runs[1:], strict=False))

    # Progress rides on the master's heartbeat; a cancel on its answer.
    job_id = enqueue("TEST_PROGRESS", '{"seconds": 60}')
    wait_for(lambda: jobs.get(job_id)["progressMessage"] == "halfway", 20, "the progress")
    cancelled = cli("cancel", job_id, "--by", "through-pgbouncer")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "stopping: running" in cancelled.stdout
    wait_for(lambda: jobs.get(job_id)["status"] == "FAILED", 10, "the job to be cancelled")
    assert re.match(r"cancelled by through-pgbouncer at \S+ while running",
                    jobs.get(job_id)["lastError"])
    waited = cli("wait", job_id, "--timeout", "10s")
    assert waited.returncode == 1 and "ended FAILED: cancelled by" in waited.stderr


def test_enqueues_from_several_processes_through_pgbouncer_all_land(
    bouncer_url: str, jobs: Jobs, tmp_path: Path
) -> None:
    """enqueue()'s prepared insert (queue_core/database/direct.py) behind transaction pooling: a
    statement may reach a server connection that lacks it, or one where another process
    prepared it; every job is written either way, none twice."""
    env = worker_env(bouncer_url, tmp_path / "home")
    script = ("import sys, skiplock\n"
              "ids = [skiplock.enqueue('TEST_RECORD', {'p': sys.argv[1], 'i': i}) "
              "for i in range(40)]\n"
              "ids += skiplock.enqueue_many([{'type': 'TEST_RECORD', 'payload': {'b': i}} "
              "for i in range(5)])\n"
              "print(' '.join(ids))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(5)]
    written: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        written += out.split()
    assert len(written) == len(set(written)) == 5 * 45
    assert all(jobs.get(job_id)["status"] == "PENDING" for job_id in written)
