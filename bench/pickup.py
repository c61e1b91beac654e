"""Pick-up latency into an idle pool, beside the same measurement of an earlier commit.

    python -m bench pickup [--against 38f9644] [--pickups 200] [--runs 3]

The speed work's target for pick-up is relative: "no worse than today". This
measures it that way: the code of `--against` (default: the commit the speed
issue was measured on) is checked out in a temporary git worktree, and each run
measures it and the current checkout one right after the other, on the same
server, with the same handler. Each side runs in its own process whose
`PYTHONPATH` starts with its tree, so the enqueue, the pool and the schema
(migrated by that tree's own code) are that side's; `skiplock worker` with two
children; jobs enqueued one by one, 50 ms apart, into an idle pool; latency
from just before the `enqueue()` call to the start of the handler.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import machine, percentile, scratch_database, worktree

HERE = Path(__file__).resolve().parent

# The handler both sides run: in a folder of its own, so that neither tree's
# bench/ (which differ) is imported by the workers.
HANDLERS = '''
import os, time
from skiplock.handlers import JobResult, handler

@handler("BENCH_PICKUP")
def pickup(payload, job_id):
    line = f"{time.time() - payload['t0']:.6f}\\n".encode()
    fd = os.open(os.environ["BENCH_PICKUP_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return JobResult(success=True)
'''

# Run in a process whose sys.path starts with one tree: that tree's skiplock.
PROBE = '''
import json, os, signal, subprocess, sys, time
tree, handlers, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, tree)
from skiplock import queue_core as q
try:  # where it lives now; an earlier tree has it one level up
    from skiplock.queue_core.database import scratch
except ImportError:
    from skiplock.queue_core import scratch

# A file of this run's own: one left by the run before would end the wait for the
# pool to be up at once, and the first jobs would wait for its boot instead.
path = os.path.join(handlers, f"pickups-{os.getpid()}")
with scratch.scratch_database("skiplock_bench_pickup") as url:
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": f"{tree}:{handlers}",
           "BENCH_PICKUP_FILE": path}
    pool = subprocess.Popen([sys.executable, "-m", "skiplock", "worker", "--handlers",
                             "pickup_handlers", "--concurrency", "2", "--log-level", "WARNING"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        q.enqueue("BENCH_PICKUP", {"t0": time.time()})  # the pool is up once this one ran
        deadline = time.monotonic() + 120
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise SystemExit("the pool never picked up a job")
            time.sleep(0.05)
        time.sleep(1.0)  # idle: the pool waits for work
        os.unlink(path)
        for _ in range(count):
            q.enqueue("BENCH_PICKUP", {"t0": time.time()})
            time.sleep(0.05)
        while not os.path.exists(path) or len(open(path).read().split()) < count:
            if time.monotonic() > deadline:
                raise SystemExit("the pool did not pick up every job")
            time.sleep(0.05)
        print(json.dumps([float(x) * 1000 for x in open(path).read().split()]))
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(30)
'''


def measure(tree: Path, handlers: Path, count: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tree), str(handlers), str(count)],
                         capture_output=True, text=True, cwd=handlers)
    if out.returncode != 0:
        raise SystemExit(f"the pick-up run of {tree} failed: {out.stderr.strip()[-2000:]}")
    waits: list[float] = json.loads(out.stdout.strip().splitlines()[-1])
    return sorted(waits)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench pickup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="38f9644",
                        help="the earlier commit to compare with (default 38f9644: the code "
                             "the speed issue's figures were taken on)")
    parser.add_argument("--pickups", type=int, default=200,
                        help="jobs enqueued one by one per run (default 200: p99 is then the "
                             "198th, not one stall of the VM)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side, median (default 3)")
    args = parser.parse_args(argv)
    root = HERE.parent
    with tempfile.TemporaryDirectory(prefix="skiplock-pickup-") as tmp, \
            worktree(args.against) as baseline:
        handlers = Path(tmp) / "handlers"
        handlers.mkdir()
        (handlers / "pickup_handlers.py").write_text(HANDLERS)
        with scratch_database() as url:
            print(f"machine: {machine(url)}; load average {os.getloadavg()[0]:.2f}")
        print(f"pick-up into an idle pool of 2 children, {args.pickups} jobs 50 ms apart, "
              f"{args.runs} run(s) per side, median\n")
        print(f"{'':<28} {'p50 ms':>8} {'p99 ms':>8}")
        sides: dict[str, list[tuple[float, float]]] = {"baseline": [], "current": []}
        for _ in range(args.runs):
            for name, tree in (("baseline", baseline), ("current", root)):
                waits = measure(tree, handlers, args.pickups)
                sides[name].append((percentile(waits, 0.5), percentile(waits, 0.99)))
        for name, label in (("baseline", f"{args.against} (before)"), ("current", "this checkout")):
            p50 = statistics.median(p[0] for p in sides[name])
            p99 = statistics.median(p[1] for p in sides[name])
            print(f"{label:<28} {p50:>8.2f} {p99:>8.2f}")
        ratio = statistics.median(c[1] / b[1] for c, b in
                                  zip(sides["current"], sides["baseline"], strict=True))
        print(f"\np99 now / p99 before: {ratio:.2f} (target: no worse, <= 1.0)")
