"""CPU-bound jobs: where the CPU goes, and this checkout beside an earlier commit.

    python -m bench cpu [--against REV] [--jobs 400] [--pairs 4] [--ms 10]

The CPU-bound line of `make bench-peers` (10 ms jobs, two children, against the
bare body on two cores) moves by a few percent from run to run on a shared VM,
as much as one change to the code around a job is worth. This measures a change
the way that line can be trusted: the code of `--against` (default: HEAD, the
last commit) is checked out in a temporary git worktree, and each pair of runs
measures it and the current checkout one right after the other, in an order
that alternates from pair to pair, each right after the bare body's own run.
Each side runs in its own process whose `PYTHONPATH` starts with its tree (its
enqueue, its pool, its schema), on a private cluster with default settings;
both run the same body (bench/bodies.py, copied beside a handler of its own).

Each run prints, besides the rate against the bare body's:

- the CPU between two bodies of a child (`bodies.Spans.between_us`);
- the tail: how long after one child's last body the other's ended;
- the CPU time per job of the other processes (PostgreSQL's backends, the
  master, PostgreSQL's other processes),
  read from /proc every 0.5 s during the steady part of the run (0.5 s after
  the first body started to 0.5 s before the last one ended). The two cores
  are busy all that time, so every microsecond of any of them is one the bodies
  lose: for 0.95 of the bare rate they must add up to about 0.5 ms a job.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import bodies
from bench.common import machine, private_server, scratch_database, worktree

HERE = Path(__file__).resolve().parent
# The children's own share is the CPU between two bodies (`bodies.Spans.between_us`),
# read from the bodies' spans: far steadier than their /proc time less the bodies.
ROLES = ("backends", "master", "other PostgreSQL")
LABELS = {"backends": "backends", "master": "master", "other PostgreSQL": "PG other"}

# The handler both sides run, in a folder of its own with a copy of bodies.py, so
# that neither tree's bench/ (which may differ) is imported by the workers.
HANDLERS = '''
from skiplock.handlers import JobResult, handler
import cpu_bodies

@handler("BENCH_CPU")
def burn(payload, job_id):
    cpu_bodies.burn(payload["ms"])
    return JobResult(success=True)
'''

# CPU seconds of each process of the run by role, read from /proc: the pool's master and
# children (this pool's: other pools may run on the machine), and this cluster's
# backends (of the run's database, or not).
SAMPLER = '''
TICK = os.sysconf("SC_CLK_TCK")

def processes(database, postmaster, master):
    seen = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read().replace("\\0", " ").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if pid == str(master):
            role = "master"
        elif fields[1] == str(master):
            role = "children"
        elif fields[1] == postmaster:  # this cluster's, not another server's
            role = "backends" if database in cmd else "other PostgreSQL"
        else:
            continue
        seen[pid] = (role, (int(fields[11]) + int(fields[12])) / TICK)
    return seen
'''

# Run in a process whose sys.path starts with one tree: that tree's skiplock. It
# prints one JSON line: the span file and the /proc snapshots taken meanwhile.
PROBE = '''
import json, os, signal, subprocess, sys, threading, time
tree, handlers, count, ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sys.path.insert(0, tree)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from skiplock import queue_core as q
try:  # where it lives now; an earlier tree has it one level up
    from skiplock.queue_core.database import scratch
except ImportError:
    from skiplock.queue_core import scratch

''' + SAMPLER + '''

spans = os.path.join(handlers, f"spans-{os.getpid()}")
with scratch.scratch_database("skiplock_bench_cpu") as url:
    database = make_url(url).database
    for start in range(0, count, 5000):
        q.enqueue_many([{"type": "BENCH_CPU", "payload": {"ms": ms}}
                        for _ in range(min(5000, count - start))])
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text('VACUUM ANALYZE "WorkerJob"'))
        data = conn.execute(text("SHOW data_directory")).scalar()
    engine.dispose()
    with open(os.path.join(data, "postmaster.pid")) as f:
        postmaster = f.readline().strip()
    snapshots, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            snapshots.append((time.time(), processes(database, postmaster, pool.pid)))
            stop.wait(0.5)

    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": f"{tree}:{handlers}",
           "BENCH_SPAN_FILE": spans}
    pool = subprocess.Popen([sys.executable, "-m", "skiplock", "worker", "--handlers",
                             "cpu_handlers", "--concurrency", "2", "--heartbeat", "1",
                             "--log-level", "WARNING"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        deadline = time.monotonic() + 120 + count * ms / 1000
        while not os.path.exists(spans) or len(open(spans).readlines()) < count:
            if time.monotonic() > deadline or pool.poll() is not None:
                raise SystemExit("the pool did not run every job")
            time.sleep(0.1)
    finally:
        stop.set()
        sampler.join()
        pool.send_signal(signal.SIGTERM)
        pool.wait(30)
    print(json.dumps({"spans": spans, "snapshots": snapshots}))
'''


@dataclass(frozen=True)
class Run:
    ratio: float  # the rate over the bare body's, measured just before
    between_us: float
    tail_ms: float
    per_job_ms: dict[str, float]  # CPU per job by kind of process, in the steady part


def measure(tree: Path, handlers: Path, count: int, ms: float, bare_rate: float) -> Run:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tree), str(handlers), str(count),
                          str(ms)], capture_output=True, text=True, cwd=handlers)
    if out.returncode != 0:
        raise SystemExit(f"the run of {tree} failed: {out.stderr.strip()[-2000:]}")
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    spans = bodies.read_spans(answer["spans"])
    os.unlink(answer["spans"])
    return Run(spans.rate / bare_rate, spans.between_us, spans.tail_s * 1000,
               steady_cpu(answer["snapshots"], spans))


def steady_cpu(snapshots: list[tuple[float, dict[str, tuple[str, float]]]],
               spans: bodies.Spans) -> dict[str, float]:
    """CPU ms per job of each kind of process between the first snapshot 0.5 s into
    the run and the last one 0.5 s before its end."""
    inside = [s for s in snapshots
              if spans.first_start + 0.5 <= s[0] <= spans.last_end - 0.5]
    if len(inside) < 2:
        return {}
    (began, before), (ended, after) = inside[0], inside[-1]
    spent = dict.fromkeys(ROLES, 0.0)
    for pid, (role, cpu) in after.items():
        spent[role] = spent.get(role, 0.0) + cpu - (before[pid][1] if pid in before else 0.0)
    jobs = (ended - began) * spans.rate
    return {role: 1000 * seconds / jobs for role, seconds in spent.items()}


def _burn_many(args: tuple[int, float, str]) -> None:
    count, ms, spans = args
    os.environ["BENCH_SPAN_FILE"] = spans
    for _ in range(count):
        bodies.burn(ms)


def bare_rate(count: int, ms: float) -> float:
    """The bare body in two processes, no queue, timed from its spans."""
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp, ctx.Pool(2) as pool:
        spans = str(Path(tmp) / "spans")
        pool.map(_burn_many, [(count // 2, ms, spans), (count - count // 2, ms, spans)])
        return bodies.read_spans(spans).rate


def describe(run: Run) -> str:
    cpu = "  ".join(f"{run.per_job_ms.get(role, float('nan')):>8.3f}" for role in ROLES)
    return f"{run.ratio:>9.3f} {run.between_us:>10.0f} {run.tail_ms:>8.0f}  {cpu}"


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD",
                        help="the earlier commit to compare with (default HEAD: what the "
                             "uncommitted changes of this checkout are measured against)")
    parser.add_argument("--jobs", type=int, default=400, help="jobs per run (default 400)")
    parser.add_argument("--pairs", type=int, default=4,
                        help="pairs of runs, one of each side, median (default 4)")
    parser.add_argument("--ms", type=float, default=10.0,
                        help="CPU time of each job's body, ms (default 10)")
    args = parser.parse_args(argv)
    root = HERE.parent
    with tempfile.TemporaryDirectory(prefix="skiplock-cpu-") as tmp, \
            worktree(args.against) as baseline, private_server():
        handlers = Path(tmp) / "handlers"
        handlers.mkdir()
        (handlers / "cpu_handlers.py").write_text(HANDLERS)
        (handlers / "cpu_bodies.py").write_text((HERE / "bodies.py").read_text())
        with scratch_database() as url:
            print(f"machine: {machine(url)}; load average {os.getloadavg()[0]:.2f}")
        print(f"CPU-bound {args.ms:g} ms jobs, 2 children, {args.jobs} jobs per run, "
              f"{args.pairs} pair(s) of runs in alternating order\n")
        header = "  ".join(f"{LABELS[role]:>8}" for role in ROLES)
        print(f"{'':<22} {'vs bare':>9} {'between':>10} {'tail':>8}  {header}")
        print(f"{'':<22} {'':>9} {'us/job':>10} {'ms':>8}  "
              f"{'(CPU ms per job, steady part of the run)':<40}")
        sides: dict[str, list[Run]] = {"before": [], "now": []}
        trees = {"before": baseline, "now": root}
        for pair in range(args.pairs):
            bare = bare_rate(args.jobs, args.ms)
            order = ("before", "now") if pair % 2 == 0 else ("now", "before")
            for name in order:
                result = measure(trees[name], handlers, args.jobs, args.ms, bare)
                sides[name].append(result)
                print(f"pair {pair + 1}, {name:<14} {describe(result)}", flush=True)
        print()
        for name, label in (("before", f"{args.against} (before)"), ("now", "this checkout")):
            runs = sides[name]
            cpu = {role: statistics.median(r.per_job_ms.get(role, float("nan"))
                                           for r in runs) for role in ROLES}
            median = Run(statistics.median(r.ratio for r in runs),
                         statistics.median(r.between_us for r in runs),
                         statistics.median(r.tail_ms for r in runs), cpu)
            print(f"{label[:22]:<22} {describe(median)}")
