"""Where a child's time goes per job: cProfile of one real child running no-op jobs.

    python -m bench profile [--jobs 5000] [--batch-size 0] [--top 25] [--commit-delay-ms N]

A `pool.child.Child` runs in this process against a scratch database, as a
master would fork it (its messages go to a pipe this process drains), until
the backlog is gone; then the functions that cost the most time are printed,
by their own time and by cumulative time. No-op jobs make every microsecond
the queue's own.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import threading
import time

import psycopg2

from bench.common import fill, machine, scratch_database
from skiplock.queue_core.config import load_settings
from skiplock.queue_core.database.urls import libpq_dsn


def _drain_pipe(fd: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs (default 5000)")
    parser.add_argument("--batch-size", type=int, default=None, help="the child's --batch-size")
    parser.add_argument("--commit-delay-ms", type=float, default=None,
                        help="the child's --commit-delay-ms")
    parser.add_argument("--top", type=int, default=25, help="functions shown (default 25)")
    args = parser.parse_args(argv)

    from skiplock.pool.child import Child

    with scratch_database() as url:
        print(f"machine: {machine(url)}")
        fill(args.jobs, "BENCH_NOOP", {})
        overrides = {"handlers": ["bench.handlers"], "listen": False,
                     "batch_size": args.batch_size, "commit_delay_ms": args.commit_delay_ms}
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
        read_fd, write_fd = os.pipe()
        stop = threading.Event()
        drainer = threading.Thread(target=_drain_pipe, args=(read_fd, stop), daemon=True)
        drainer.start()
        child = Child(settings, slot=1, worker_id=f"profile:{os.getpid()}", master_pid=os.getppid(),
                      fd=write_fd, database_url=url)

        def watch() -> None:
            conn = psycopg2.connect(libpq_dsn(url))
            conn.autocommit = True
            with conn.cursor() as cur:
                while True:
                    cur.execute("""SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED'""")
                    if cur.fetchone()[0] >= args.jobs:
                        break
                    time.sleep(0.05)
            conn.close()
            child.stopping = True
            os.write(child.wake_w, b"x")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        profiler = cProfile.Profile()
        began = time.perf_counter()
        profiler.runcall(child.run)
        elapsed = time.perf_counter() - began
        stop.set()
        os.close(write_fd)
        print(f"{args.jobs} no-op jobs in {elapsed:.2f} s under the profiler "
              f"({args.jobs / elapsed:.0f} jobs/s; the profiler itself slows Python down)\n")
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
            text = out.getvalue()
            print(text[text.index("ncalls") - 3 if "ncalls" in text else 0:])
