"""The embedded default: a private cluster started from the installed binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

import psycopg2
import pytest

from skiplock.queue_core.database.embedded import EmbeddedCluster, find_bindir
from skiplock.queue_core.database.urls import libpq_dsn


@pytest.fixture
def home():
    path = Path(tempfile.mkdtemp(prefix="skiplock-embedded-"))
    path.chmod(0o755)  # as root, the cluster's owner can reach it: the data directory stays here
    yield path
    EmbeddedCluster(path).stop()
    shutil.rmtree(path, ignore_errors=True)


def test_binaries_are_found():
    bindir = find_bindir()
    assert bindir is not None and (bindir / "pg_ctl").exists()


@pytest.mark.timeout(120)
def test_cluster_starts_on_a_socket_is_reused_and_stops(home):
    cluster = EmbeddedCluster(home)
    url = cluster.ensure_running()
    assert "host=" in url and "127.0.0.1" not in url and cluster.data_dir == home / "pgdata"
    conn = psycopg2.connect(libpq_dsn(url))
    with conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone()[0] == ""
    conn.close()
    assert cluster.ensure_running() == url  # already running: same cluster
    if os.geteuid() == 0:
        assert (home / "pgdata").stat().st_uid != 0, "root must hand the cluster over"
    assert cluster.stop() is True
    assert cluster.is_running() is False
    assert cluster.stop() is False


@pytest.mark.timeout(120)
def test_cli_uses_the_embedded_cluster_without_database_url(home):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SKIPLOCK_HOME"] = str(home)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "skiplock", *args], env=env, text=True,
                              capture_output=True, timeout=90)

    assert cli("migrate").returncode == 0
    url = cli("db", "url")
    assert url.returncode == 0 and str(EmbeddedCluster(home).socket_dir) in unquote(url.stdout)
    job = cli("enqueue", "X", "{}", "--any-type")
    assert job.returncode == 0 and len(job.stdout.strip()) == 32
    assert cli("db", "status").returncode == 0
    assert cli("db", "stop").returncode == 0
    assert cli("db", "status").returncode == 1


def test_no_binaries_gives_an_error_naming_both_ways_out(home, monkeypatch):
    import skiplock.queue_core.database.embedded as embedded
    from skiplock.queue_core.errors import EmbeddedDatabaseError

    monkeypatch.setattr(embedded, "find_bindir", lambda: None)
    with pytest.raises(EmbeddedDatabaseError, match="DATABASE_URL") as info:
        EmbeddedCluster(home).ensure_running()
    assert "apt-get install postgresql" in str(info.value)
