"""What every benchmark shares: a scratch database, the machine, and pgbench.

A benchmark never touches a database it did not create: it makes
`skiplock_bench_<random>`, migrates it, points DATABASE_URL at it, and drops it
afterwards. Figures are printed beside the raw PostgreSQL rate that pgbench
measures on the same server in the same run, so that a reader can tell how
much of the server's capacity the queue turns into jobs.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from skiplock.queue_core.database import scratch
from skiplock.queue_core.database.urls import libpq_dsn


def scratch_database(*, demo: bool = False) -> AbstractContextManager[str]:
    return scratch.scratch_database("skiplock_bench", demo=demo)


@contextmanager
def private_server(enabled: bool = True) -> Iterator[None]:
    """A private PostgreSQL cluster with the server's default settings, for the run.

    The shared development server may be tuned for tests (autovacuum off, say),
    and other work runs against it; a benchmark that compares systems or watches
    autovacuum runs on a cluster of its own, made with initdb in a temporary
    directory (queue_core.database.embedded), and removed afterwards. Scratch databases are
    made there while it runs (TEST_DATABASE_URL)."""
    if not enabled:
        yield
        return
    from skiplock.queue_core.database.embedded import EmbeddedCluster

    home = Path(tempfile.mkdtemp(prefix="skiplock-bench-"))
    home.chmod(0o755)  # the cluster runs as an unprivileged user when we are root
    cluster = EmbeddedCluster(home)
    saved = os.environ.get("TEST_DATABASE_URL")
    try:
        os.environ["TEST_DATABASE_URL"] = cluster.ensure_running()
        yield
    finally:
        if saved is None:
            os.environ.pop("TEST_DATABASE_URL", None)
        else:
            os.environ["TEST_DATABASE_URL"] = saved
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """`rev` of this repository checked out in a temporary git worktree, removed
    afterwards: the earlier code a benchmark measures this checkout beside."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="skiplock-rev-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), rev],
                       check=True, capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)


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
        from skiplock.queue_core.database.embedded import find_bindir

        bindir = find_bindir()
        exe = str(bindir / "pgbench") if bindir else None
    if exe is None:
        raise SystemExit("pgbench not found: install the PostgreSQL server package")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    try:
        run = ["-t", str(transactions)] if transactions else ["-T", str(int(max(1, seconds)))]
        # The password goes in the environment: a command line is visible to every user.
        env = {**os.environ, "PGPASSWORD": make_url(url).password or ""}
        out = subprocess.run([exe, "-n", "-f", handle.name, "-c", str(clients),
                              "-j", str(clients), *run, libpq_dsn(url, with_password=False)],
                             capture_output=True, text=True, check=True, env=env).stdout
    finally:
        os.unlink(handle.name)
    found = re.search(r"tps = ([\d.]+)", out)
    if not found:
        raise RuntimeError(f"cannot read pgbench output:\n{out}")
    return float(found.group(1))


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `q` of them at or
    below it. Of 100 values p99 is the 99th: the largest is p100. (This took the
    value at index `int(q * n)` until 2026-12-03, which for 100 values made p99
    the largest, and p50 the 51st.)"""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


def stolen_cpu_s() -> float:
    """CPU seconds the hypervisor has taken from this VM's CPUs since boot (`steal`
    in /proc/stat, summed over the CPUs): time no process of the machine could run."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # "cpu  user nice system idle iowait irq softirq steal"
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


class StealMeter:
    """Samples the VM's stolen CPU time every 0.2 s while a run goes on, so that the steal
    inside any span of the run can be read afterwards (`within`)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> StealMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.samples.append((time.time(), stolen_cpu_s()))
            if self._stop.wait(0.2):
                self.samples.append((time.time(), stolen_cpu_s()))
                return

    def within(self, start: float, end: float) -> float:
        """CPU seconds stolen between two wall-clock instants (interpolated)."""
        return self._at(end) - self._at(start)

    def _at(self, t: float) -> float:
        samples = self.samples
        if not samples or t <= samples[0][0]:
            return samples[0][1] if samples else 0.0
        for (t0, s0), (t1, s1) in zip(samples, samples[1:], strict=False):
            if t0 <= t <= t1:
                return s0 + (s1 - s0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return samples[-1][1]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def sql(url: str, statement: str) -> None:
    scratch.run_admin(url, statement)


def fill(count: int, job_type: str, payload: dict[str, Any], batch: int = 10_000) -> None:
    """Enqueue `count` jobs in batches (one round trip each), then VACUUM ANALYZE."""
    from skiplock import queue_core

    for start in range(0, count, batch):
        queue_core.enqueue_many([{"type": job_type, "payload": payload}
                                 for _ in range(min(batch, count - start))])
    sql(os.environ["DATABASE_URL"], 'VACUUM ANALYZE "WorkerJob"')


# The flags every benchmark's pool shares; each adds its own (concurrency, batch size).
WORKER_FLAGS = ["--handlers", "bench.handlers", "--heartbeat", "1", "--log-level", "WARNING"]


def start_pool(url: str, *flags: str) -> subprocess.Popen[bytes]:
    """A `skiplock worker` on `url` in its own process group, its output discarded."""
    return subprocess.Popen([sys.executable, "-m", "skiplock", "worker", *WORKER_FLAGS, *flags],
                            env={**os.environ, "DATABASE_URL": url}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_pool(proc: subprocess.Popen[bytes]) -> None:
    """Drain the pool with TERM; SIGKILL its whole group if it is not gone in 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_tag_completed(conn: Any, tag: str, timeout_s: float, poll_s: float = 0.1) -> None:
    """Wait until every job whose payload's `tag` is `tag` is COMPLETED (a psycopg2
    connection in autocommit); SystemExit after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    with conn.cursor() as cur:
        while True:
            cur.execute("""SELECT count(*) FROM "WorkerJob"
                           WHERE payload->>'tag' = %s AND status <> 'COMPLETED'""", (tag,))
            if cur.fetchone()[0] == 0:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{tag}: the jobs did not complete in {timeout_s:g} s")
            time.sleep(poll_s)
