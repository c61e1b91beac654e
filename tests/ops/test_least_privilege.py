"""The least-privileged role of docs/operations.md, for real: on a database where PUBLIC
holds nothing, a role with exactly those grants runs the worker through the
built-in chains and the commands it is meant to run; a role short of one grant
stops the pool at boot (exit 3) with a line naming the GRANT."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from skiplock.queue_core.database.grants import DEMO_GRANTS, WORKER_GRANTS
from skiplock.queue_core.database.scratch import run_admin, scratch_database
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]


def readme_grants(role: str, database: str) -> list[str]:
    """The statements of the docs' block, for `role` on `database` (not the CREATE ROLE)."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("## The least-privileged database role"):]
    block = section[section.index("```sql") + 6:section.index("```", section.index("```sql") + 6)]
    body = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in body.split(";") if s.strip()]
    return [s.replace("skiplock_worker", f'"{role}"').replace("DATABASE app", f'DATABASE "{database}"')
            for s in statements if not s.startswith("CREATE ROLE")]


def test_the_readme_lists_every_grant_the_worker_checks() -> None:
    block = " ".join(" ".join(readme_grants("r", "d")).split())
    for privileges, kind, name in WORKER_GRANTS + DEMO_GRANTS:
        if kind == "DATABASE":
            assert "GRANT CONNECT ON DATABASE" in block
            continue
        on = f"ON {kind} {name}" if kind in ("FUNCTION", "SCHEMA") else name
        granted = [g for g in re.split(r"(?=GRANT )", block) if on in g]
        assert granted, f"docs/operations.md grants nothing on {kind} {name}"
        assert any(p in g for g in granted for p in [privileges]), (privileges, kind, name)


class Hardened:
    def __init__(self, owner_url: str) -> None:
        self.owner_url = owner_url
        self.database = make_url(owner_url).database or ""
        self.role = f"skiplock_least_{secrets.token_hex(4)}"
        self.url = make_url(owner_url).set(username=self.role).render_as_string(
            hide_password=False)  # the test server trusts local connections

    def admin(self, statement: str) -> None:
        run_admin(self.owner_url, statement)

    def cli(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPLOCK_")}
        env["DATABASE_URL"] = url or self.url
        return subprocess.run([sys.executable, "-m", "skiplock", *args], env=env, text=True,
                              capture_output=True, timeout=60, cwd=REPO)


@pytest.fixture
def hardened() -> Iterator[Hardened]:
    with scratch_database("skiplock_hardened", demo=True) as owner_url:
        h = Hardened(owner_url)
        for statement in (
                "REVOKE ALL ON SCHEMA public FROM PUBLIC",
                "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC",
                f'REVOKE ALL ON DATABASE "{h.database}" FROM PUBLIC',
                'REVOKE USAGE ON TYPE "JobStatus", "JobType" FROM PUBLIC',
                f'CREATE ROLE "{h.role}" LOGIN'):
            h.admin(statement)
        try:
            for grant in readme_grants(h.role, h.database):
                h.admin(grant)
            yield h
        finally:
            h.admin(f'DROP OWNED BY "{h.role}"')
            run_admin(owner_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE usename = '{h.role}'")
            h.admin(f'DROP ROLE "{h.role}"')


def _worker(h: Hardened, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPLOCK_")}
    env.update(DATABASE_URL=h.url, PYTHONUNBUFFERED="1", SKIPLOCK_HEARTBEAT_S="1")
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "skiplock", "worker", "--concurrency", "2",
                                 "--recovery-interval", "1"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.timeout(240)
def test_the_readme_role_runs_the_chains_and_its_commands_on_a_hardened_database(
        hardened: Hardened, tmp_path: Path) -> None:
    from skiplock.handlers.demo import pending_jobs, report, seed_demo

    seeded = seed_demo("Europe/Paris", days=7, seed=3)  # as the owner, like an application
    log_path = tmp_path / "worker.log"
    proc = _worker(hardened, log_path)
    try:
        wait_for(lambda: pending_jobs(seeded.user_id) == 0 or proc.poll() is not None, 150,
                 "the chains to drain", interval=0.5)
        assert proc.poll() is None, log_path.read_text()
        made = report(seeded.user_id)
        assert made, made
        assert hardened.cli("ps").returncode == 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
    log = log_path.read_text()
    assert code == 0 and "Traceback" not in log and "lacks" not in log, log
    dead = [r for r in run_rows(hardened, 'SELECT type, "lastError" FROM "WorkerJob" '
                                           "WHERE status <> 'COMPLETED'")]
    assert dead == [], dead

    job = hardened.cli("enqueue", "X", "{}", "--any-type")
    assert job.returncode == 0, job.stderr
    for args in (["stats"], ["jobs"], ["job", job.stdout.strip()], ["ps"], ["recover"],
                 ["cleanup"], ["recount-slots"], ["retry", "--all-dead"], ["db", "url"]):
        result = hardened.cli(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    # What the role is not meant to do fails in one line that names the grant.
    paused = hardened.cli("pause", "X")
    assert paused.returncode == 1 and "Traceback" not in paused.stderr
    assert len(paused.stderr.strip().splitlines()) == 1, paused.stderr
    assert 'GRANT INSERT ON TABLE "WorkerJobPause"' in paused.stderr, paused.stderr
    # `migrate` is the owner's work; on a database that is up to date it has none to do,
    # and the role may say so (it reads skiplock_version, as the pool does at boot).
    current = hardened.cli("migrate")
    assert current.returncode == 0 and "already at revision" in current.stderr, current.stderr


def run_rows(h: Hardened, statement: str) -> list[tuple[object, ...]]:
    import psycopg2

    from skiplock.queue_core.database.urls import libpq_dsn

    conn = psycopg2.connect(libpq_dsn(h.owner_url))
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_a_role_short_of_one_grant_stops_the_worker_with_exit_3_naming_it(
        hardened: Hardened, tmp_path: Path) -> None:
    hardened.admin(f'REVOKE EXECUTE ON FUNCTION skiplock_type_paused(text) FROM "{hardened.role}"')
    hardened.admin(f'REVOKE UPDATE ON "WorkerJob" FROM "{hardened.role}"')
    log_path = tmp_path / "worker.log"
    proc = _worker(hardened, log_path)
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    log = log_path.read_text()
    assert code == 3, log
    assert "GRANT EXECUTE ON FUNCTION skiplock_type_paused(text)" in log, log
    assert 'GRANT UPDATE ON TABLE "WorkerJob"' in log, log
    assert "Traceback" not in log, log


def test_cleanup_by_a_role_granted_before_the_recount_deletes_and_names_the_grant(
        hardened: Hardened) -> None:
    hardened.admin(f'REVOKE EXECUTE ON FUNCTION skiplock_recount_slots() FROM "{hardened.role}"')
    result = hardened.cli("cleanup")
    assert result.returncode == 0 and "deleted 0 jobs" in result.stdout, result.stderr
    grant = 'GRANT EXECUTE ON FUNCTION "skiplock_recount_slots"'
    assert "Traceback" not in result.stderr and grant in result.stderr, result.stderr
    refused = hardened.cli("recount-slots")
    assert refused.returncode == 1 and grant in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
