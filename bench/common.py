"""What every benchmark shares: a scratch database, the machine, and pgbench.

A benchmark never touches a database it did not create: it makes
`skiplock_bench_<random>`, migrates it, points DATABASE_URL at it, and drops it
afterwards. Figures are printed beside the raw PostgreSQL rate that pgbench
measures on the same server in the same run, so that a reader can tell how
much of the server's capacity the queue turns into jobs.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from queue_core import config, db, migrate
from queue_core.urls import libpq_dsn, normalize


def admin_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return normalize(os.environ["DATABASE_URL"])
    try:
        psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres",
                         connect_timeout=3).close()
        return "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    except psycopg2.OperationalError:
        from queue_core.embedded import EmbeddedCluster

        return EmbeddedCluster(Path(".skiplock")).ensure_running()


def _admin(url: str, statement: str) -> None:
    conn = psycopg2.connect(libpq_dsn(url))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


@contextmanager
def scratch_database() -> Iterator[str]:
    admin = admin_url()
    name = f"skiplock_bench_{uuid.uuid4().hex[:8]}"
    _admin(admin, f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    config.clear_cache()
    db.reset_engine()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        db.reset_engine()
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        _admin(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}"')


def machine(url: str) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            found = re.search(r"model name\s*:\s*(.+)", handle.read())
            cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as handle:
            kib = int(handle.readline().split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    conn = psycopg2.connect(libpq_dsn(url))
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute("SHOW synchronous_commit")
        sync = cur.fetchone()[0]
    conn.close()
    return (f"{cpu}, {os.cpu_count()} cores{mem}; PostgreSQL {version} "
            f"(synchronous_commit={sync}); Python {platform.python_version()}")


def pgbench(url: str, script: str, *, clients: int = 1, seconds: float = 5,
            transactions: int | None = None) -> float:
    """Transactions per second of `script` run by pgbench against `url`."""
    exe = shutil.which("pgbench")
    if exe is None:
        from queue_core.embedded import find_bindir

        bindir = find_bindir()
        exe = str(bindir / "pgbench") if bindir else None
    if exe is None:
        raise SystemExit("pgbench not found: install the PostgreSQL server package")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    try:
        run = ["-t", str(transactions)] if transactions else ["-T", str(int(max(1, seconds)))]
        out = subprocess.run([exe, "-n", "-f", handle.name, "-c", str(clients),
                              "-j", str(clients), *run, libpq_dsn(url)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(handle.name)
    found = re.search(r"tps = ([\d.]+)", out)
    if not found:
        raise RuntimeError(f"cannot read pgbench output:\n{out}")
    return float(found.group(1))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def sql(url: str, statement: str) -> None:
    _admin(url, statement)
