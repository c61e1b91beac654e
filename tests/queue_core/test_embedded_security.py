"""The embedded cluster is private: a second local user cannot connect, nothing
of the user's changes owner or is deleted, and it runs from anywhere (a checkout
in root's 0700 home directory, an ordinary user's own directory)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from skiplock.queue_core.database.embedded import SHARED_ROOT, EmbeddedCluster, find_bindir, is_private_dir
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.errors import EmbeddedDatabaseError
from tests.queue_core.embedded_users import Runtime, as_user, ensure_user
from tests.support import wait_for

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(find_bindir() is None, reason="no PostgreSQL server binaries")]

OWNER = "skiplock-owner"  # an ordinary user who runs skiplock in the tests
INTRUDER = "skiplock-intruder"  # another local user, who must get nowhere


def _remove(home: Path) -> None:
    cluster = EmbeddedCluster(home)
    with contextlib.suppress(EmbeddedDatabaseError):
        cluster.stop()
    data_dir = cluster.data_dir
    socket_dir = None
    with contextlib.suppress(EmbeddedDatabaseError):
        socket_dir = cluster.socket_dir
    if SHARED_ROOT in data_dir.parents:
        shutil.rmtree(data_dir, ignore_errors=True)
    if socket_dir is not None and socket_dir != data_dir and Path("/tmp") in socket_dir.parents:
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def base() -> Iterator[Path]:
    """A fresh directory (mode 0700, like mkdtemp makes it); clusters under it are removed."""
    path = Path(tempfile.mkdtemp(prefix="skiplock-sec-"))
    homes: list[Path] = []
    yield path
    for found in path.rglob("embedded.lock"):
        homes.append(found.parent)
    for home in homes:
        _remove(home)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    rt = Runtime()
    yield rt
    rt.close()


# A job the worker takes: a type it serves (a pool leaves the others PENDING for a pool
# that serves them), whose event does not exist, so that it ends at its first run.
_TAKEN = ("INTERPRET_EVENT", '{"eventId": "evt_missing"}')


def _worker_takes(popen_argv: list[str], cli: Callable[..., subprocess.CompletedProcess[str]],
                  job_id: str, **popen: Any) -> None:
    """`make worker`'s last step: the pool starts, takes the job, and stops on TERM with 0."""
    proc = subprocess.Popen([*popen_argv, "worker", "--concurrency", "1", "--no-listen"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)
    try:
        def taken() -> bool:
            shown = cli("job", job_id).stdout
            return bool(re.search(r"^status +(COMPLETED|DEAD_LETTER)", shown, re.M))

        wait_for(lambda: taken() or proc.poll() is not None, 60, "the worker to take the job",
                 interval=0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0


def _owners(tree: Path) -> dict[str, int]:
    return {str(p): os.lstat(p).st_uid for p in [tree, *tree.rglob("*")]}


def _psql_as(user_name: str, socket_dir: Path) -> subprocess.CompletedProcess[str]:
    user = ensure_user(user_name)
    psql = str(find_bindir() / "psql")  # type: ignore[operator]
    return as_user(user, [psql, "-X", "-h", str(socket_dir), "-U", "postgres", "-d", "skiplock",
                          "-c", "SELECT 1"], timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="the case of root")
def test_root_runs_a_checkout_under_a_0700_directory_and_changes_no_owner(base: Path) -> None:
    # Like a clone in /root: the cluster's owner cannot enter `base`.
    home = base / "checkout" / ".skiplock"
    (base / "checkout" / ".ssh").mkdir(parents=True)
    (base / "checkout" / ".ssh" / "id_ed25519").write_text("secret")
    before = _owners(base)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SKIPLOCK_HOME"] = str(home)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skiplock", *args], env=env, text=True,
                              capture_output=True, timeout=90, cwd=base / "checkout")

    migrated = cli("migrate", "--demo")  # as `make worker` does in a checkout
    assert migrated.returncode == 0, migrated.stderr
    job = cli("enqueue", *_TAKEN)
    assert job.returncode == 0 and len(job.stdout.strip()) == 32, job.stderr
    status = cli("db", "status")
    shared = EmbeddedCluster(home).shared_data_dir
    assert status.returncode == 0 and f"embedded cluster in {shared}: running" in status.stdout
    assert is_private_dir(shared, os.stat(shared).st_uid) and os.stat(shared).st_uid != 0
    _worker_takes([sys.executable, "-m", "skiplock"], cli, job.stdout.strip(), env=env,
                  cwd=base / "checkout")
    after = _owners(base)
    assert {p: uid for p, uid in after.items() if p in before} == before
    assert set(after.values()) == {0}, "nothing under SKIPLOCK_HOME may change owner"
    assert cli("db", "stop").returncode == 0
    assert cli("db", "status").returncode == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a second local user")
def test_another_local_user_cannot_connect_to_a_cluster_root_started(base: Path) -> None:
    base.chmod(0o755)  # everyone may walk up to the cluster: only its own guards remain
    home = base / "home"
    home.mkdir()
    (home / ".ssh").mkdir()
    cluster = EmbeddedCluster(home)
    url = cluster.ensure_running()
    assert cluster.data_dir == home / "pgdata"
    assert is_private_dir(cluster.socket_dir, os.stat(cluster.data_dir).st_uid)
    intruder = _psql_as(INTRUDER, cluster.socket_dir)
    assert intruder.returncode != 0 and "1 row" not in intruder.stdout
    assert "Permission denied" in intruder.stderr
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
            assert [row[0] for row in cur.fetchall()] == ["peer"]
            cur.execute("SHOW unix_socket_permissions")
            assert cur.fetchone()[0] == "0700"
    finally:
        conn.close()
    # Only the data directory itself belongs to the cluster's owner.
    assert os.stat(home).st_uid == 0 and os.stat(home / ".ssh").st_uid == 0
    assert os.stat(home / "embedded.lock").st_uid == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs ordinary local users")
def test_an_ordinary_user_runs_it_from_their_own_0700_directory(
        base: Path, runtime: Runtime) -> None:
    owner = ensure_user(OWNER)
    base.chmod(0o755)
    own = base / "owner"
    own.mkdir(mode=0o700)
    os.chown(own, owner.pw_uid, owner.pw_gid)
    home = own / "project" / ".skiplock"
    command, env = runtime.command(owner)
    env["SKIPLOCK_HOME"] = str(home)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return as_user(owner, [*command, *args], env=env)

    migrated = cli("migrate", "--demo")  # as `make worker` does in a checkout
    assert migrated.returncode == 0, migrated.stderr
    job = cli("enqueue", *_TAKEN)
    assert job.returncode == 0 and len(job.stdout.strip()) == 32, job.stderr
    status = cli("db", "status")
    assert status.returncode == 0 and f"{home / 'pgdata'}: running" in status.stdout
    assert os.stat(home / "pgdata").st_uid == owner.pw_uid
    intruder = _psql_as(INTRUDER, home / "pgdata")
    assert intruder.returncode != 0, intruder.stdout
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/", "LANG": "C.UTF-8"}
    _worker_takes(command, cli, job.stdout.strip(), env={**base_env, **env}, cwd="/",
                  user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
    assert cli("db", "stop").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a second local user")
def test_a_long_path_gets_a_private_socket_directory_and_a_planted_one_is_refused(
        base: Path) -> None:
    base.chmod(0o755)
    home = base / ("deep-" * 16) / ".skiplock"
    home.mkdir(parents=True)
    cluster = EmbeddedCluster(home)
    cluster.ensure_running()
    first = cluster.socket_dir
    owner_uid = os.stat(cluster.data_dir).st_uid
    assert first.parent == Path("/tmp") and is_private_dir(first, owner_uid)
    assert cluster.stop()
    shutil.rmtree(first)  # /tmp was cleaned; another user plants the same name
    intruder = ensure_user(INTRUDER)
    assert as_user(intruder, ["mkdir", "-m", "777", str(first)]).returncode == 0
    try:
        EmbeddedCluster(home).ensure_running()
        second = EmbeddedCluster(home).socket_dir
        assert second != first and is_private_dir(second, owner_uid)
        assert os.stat(first).st_uid == intruder.pw_uid and os.listdir(first) == []
        # A symlink planted in place of the socket directory is refused the same way.
        assert EmbeddedCluster(home).stop()
        shutil.rmtree(second)
        os.symlink(first, second)
        EmbeddedCluster(home).ensure_running()
        third = EmbeddedCluster(home).socket_dir
        assert third not in (first, second) and is_private_dir(third, owner_uid)
        assert os.listdir(first) == []
    finally:
        shutil.rmtree(first, ignore_errors=True)
        for path in Path("/tmp").glob("skiplock-*"):
            if path.is_symlink() and Path(os.readlink(path)) == first:
                path.unlink()


def test_a_data_directory_that_is_not_a_cluster_is_never_deleted(base: Path) -> None:
    base.chmod(0o755)
    home = base / "home"
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddedDatabaseError, match="deletes nothing"):
        EmbeddedCluster(home).ensure_running()
    assert (home / "pgdata" / "notes.txt").read_text() == "mine"


def test_a_path_with_quotes_and_backslashes_is_quoted_in_the_configuration(base: Path) -> None:
    base.chmod(0o755)
    home = base / "it's a \\ home"
    cluster = EmbeddedCluster(home)
    url = cluster.ensure_running()
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW unix_socket_directories")
            assert cur.fetchone()[0] == str(home / "pgdata")
    finally:
        conn.close()
