"""A chaos soak (not a speed benchmark): random SIGKILLs against two real pools.

    python -m bench chaos [--jobs 600] [--seconds 45] [--seed 7]

Two `skiplock worker` pools run jobs that each record their run inside the
job's transaction (so a run counts only if its completion committed) while
children and masters are SIGKILLed at random; killed masters are restarted.
Then the pools drain and stop, and the table is read: every job must be
COMPLETED with exactly one committed run, or DEAD_LETTER with a lastError;
none may be left PENDING or PROCESSING, and no process may be left behind.
Exits 1 if any of that fails.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import scratch_database
from skiplock import queue_core as q
from skiplock.queue_core import db

REPO = Path(__file__).resolve().parent.parent
HANDLERS = "tests.pool.sample_handlers"  # TEST_RECORD writes pool_test_runs in the job's transaction
TABLES = """CREATE TABLE IF NOT EXISTS pool_test_runs (
    job_id text NOT NULL, pid integer NOT NULL,
    started timestamptz NOT NULL, finished timestamptz NOT NULL)"""


def _scalar(statement: str) -> Any:
    with db.get_engine().begin() as conn:
        return conn.execute(text(statement)).scalar()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _processes_using(url: str) -> list[int]:
    """Processes whose environment names this run's scratch database (strays, at the end)."""
    needle = f"DATABASE_URL={url}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if needle in environ.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=600, help="jobs to run (default 600)")
    parser.add_argument("--seconds", type=float, default=45, help="how long to kill (default 45)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    with scratch_database() as url:
        with db.get_engine().begin() as conn:
            conn.execute(text(TABLES))
        q.enqueue_many([{"type": "TEST_RECORD", "payload": {"seconds": rng.random() * 0.3},
                         "max_attempts": 5} for _ in range(args.jobs)])
        env = {**os.environ, "DATABASE_URL": url}

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "skiplock", "worker", "--handlers", HANDLERS,
                 "--concurrency", "2", "--heartbeat", "0.5", "--graceful-timeout", "5",
                 "--recovery-interval", "1"],
                cwd=REPO, env=env, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        pools = [start(), start()]
        kills = {"children": 0, "masters": 0}
        try:
            stop_at = time.monotonic() + args.seconds
            while time.monotonic() < stop_at:
                time.sleep(rng.uniform(0.3, 1.2))
                i = rng.randrange(len(pools))
                kids = _children(pools[i].pid)
                if rng.random() < 0.8 and kids:
                    os.kill(rng.choice(kids), signal.SIGKILL)
                    kills["children"] += 1
                else:
                    pools[i].kill()
                    pools[i].wait()
                    kills["masters"] += 1
                    pools[i] = start()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and _scalar(
                    """SELECT count(*) FROM "WorkerJob" WHERE status IN ('PENDING', 'PROCESSING')"""):
                time.sleep(0.5)
            for pool in pools:
                pool.send_signal(signal.SIGTERM)
            codes = [pool.wait(60) for pool in pools]
        finally:
            for pool in pools:
                if pool.poll() is None:
                    os.killpg(pool.pid, signal.SIGKILL)
        time.sleep(1)
        with db.get_engine().begin() as conn:
            statuses = dict(conn.execute(text(
                """SELECT status::text, count(*) FROM "WorkerJob" GROUP BY 1""")).fetchall())
        doubled = _scalar("""SELECT count(*) FROM (SELECT job_id FROM pool_test_runs
                             GROUP BY job_id HAVING count(*) > 1) d""")
        unrecorded = _scalar("""SELECT count(*) FROM "WorkerJob" j WHERE status = 'COMPLETED'
                                AND NOT EXISTS (SELECT 1 FROM pool_test_runs r WHERE r.job_id = j.id)""")
        silent_dead = _scalar("""SELECT count(*) FROM "WorkerJob"
                                 WHERE status = 'DEAD_LETTER' AND "lastError" IS NULL""")
        strays = _processes_using(url)
        print(f"kills: {kills['children']} children, {kills['masters']} masters; "
              f"master exit codes {codes}")
        print(f"jobs by status: {statuses}")
        print(f"completed twice: {doubled}; completed without a run: {unrecorded}; "
              f"dead letters without lastError: {silent_dead}; stray processes: {len(strays)}")
        ok = (set(statuses) <= {"COMPLETED", "DEAD_LETTER"} and not doubled and not unrecorded
              and not silent_dead and not strays and codes == [0, 0])
        print("OK: nothing lost, nothing doubled" if ok else "FAILED")
        if not ok:
            raise SystemExit(1)
