"""A burst of CPU-heavy jobs into an idle pool: this checkout beside an earlier commit.

    python -m bench burst [--against REV] [--pairs 3] [--jobs 400] [--ms 33]

A batch backfill arrives all at once: `--jobs` jobs of `--ms` ms of pure
Python, enqueued in one `enqueue_many` into a pool of two children that has
been idle for a second. The rate is counted from the first body's end to the
last one's (the jobs that ended after the first, over that time: the pick-up
of the first job and its first run are the pick-up benchmark's business) and
set against 2 / the body's single-process time, measured in this process just
before each run: the rate two processes would reach if the queue cost nothing
and the two cores were theirs. `make bench-peers` prints the same line for
skiplock and PgQueuer (bench/peers.py).

Where a burst loses, each run prints:

- `stretch`: a body's mean wall time over the single-process one (the cores
  taken by anything else: the master, the server, other work on the machine);
- `gap`: the mean wall time between two bodies of a child (the queue's code
  around a job, its statements and their waits);
- `tail`: how long after one child's last body the other's ended (a child left
  holding work while its sibling idles: the claims' share of the backlog);
- `start`: how long after the first body started the other child's first one
  did;
- `CPU share`: the bodies' share of the CPU time that the pool's processes and
  the server's used from the enqueue to the last body's end, and `CPU ms` the
  rest per job (the queue's code in the children, the master, the backends,
  the server's other processes). Read from /proc, they hold whatever else the
  machine runs, where the ratio does not: on 2 cores kept busy, the ratio is
  at most the CPU share;
- the claims, in the order they ran, as the number of jobs each took (read
  afterwards from the jobs' "startedAt", the claim's statement time).

Each pair of runs measures the code of `--against` (default HEAD, checked out
in a temporary git worktree) and this checkout one right after the other, in
an order that alternates from pair to pair, on a private cluster with default
settings, as `python -m bench cpu` does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import bodies
from bench.common import machine, private_server, scratch_database, worktree
from bench.cpu import SAMPLER

HERE = Path(__file__).resolve().parent

# The handler both sides run, beside a copy of bodies.py (as in bench/cpu.py).
HANDLERS = '''
from skiplock.handlers import JobResult, handler
import burst_bodies

@handler("BENCH_CPU")
def burn(payload, job_id):
    burst_bodies.burn(payload["ms"])
    return JobResult(success=True)
'''

# Run in a process whose sys.path starts with one tree: that tree's skiplock. It
# starts the pool, waits until both children listen and a second more, enqueues
# the burst in one call, waits for every body, and prints one JSON line: the
# span file, the claims, and the CPU time of the run's processes (bench/cpu.py's
# sampler) when the burst was enqueued and when its last body ended.
PROBE = '''
import json, os, signal, subprocess, sys, time
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
with scratch.scratch_database("skiplock_bench_burst") as url:
    database = make_url(url).database
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        data = conn.execute(text("SHOW data_directory")).scalar()
    with open(os.path.join(data, "postmaster.pid")) as f:
        postmaster = f.readline().strip()
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": f"{tree}:{handlers}",
           "BENCH_SPAN_FILE": spans}
    pool = subprocess.Popen([sys.executable, "-m", "skiplock", "worker", "--handlers",
                             "burst_handlers", "--concurrency", "2", "--heartbeat", "1",
                             "--log-level", "WARNING"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        with engine.connect() as conn:
            while conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE 'LISTEN%'")).scalar() < 2:
                if time.monotonic() > deadline or pool.poll() is not None:
                    raise SystemExit("the pool's children never listened")
                time.sleep(0.05)
        time.sleep(1.0)
        before = processes(database, postmaster, pool.pid)
        q.enqueue_many([{"type": "BENCH_CPU", "payload": {"ms": ms}} for _ in range(count)])
        deadline = time.monotonic() + 120 + count * ms / 1000
        while not os.path.exists(spans) or len(open(spans).readlines()) < count:
            if time.monotonic() > deadline or pool.poll() is not None:
                raise SystemExit("the pool did not run every job")
            time.sleep(0.01)
        after = processes(database, postmaster, pool.pid)
        with engine.connect() as conn:
            claims = [row[0] for row in conn.execute(text(
                'SELECT count(*) FROM "WorkerJob" GROUP BY "startedAt" ORDER BY "startedAt"'))]
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(30)
        engine.dispose()
    cpu = {}
    for pid, (role, seconds) in after.items():
        cpu[role] = cpu.get(role, 0.0) + seconds - (before[pid][1] if pid in before else 0.0)
    print(json.dumps({"spans": spans, "claims": claims, "cpu": cpu}))
'''


@dataclass(frozen=True)
class Burst:
    """What a span file says about a burst (bench/bodies.py writes it)."""

    ratio: float  # the rate from the first end to the last, over 2 / single_s
    stretch: float  # a body's mean wall time over the single-process one
    gap_ms: float  # mean wall time between two bodies of one process
    tail_ms: float  # the last process's last end after the first process's last end
    start_ms: float  # the last process's first start after the first body's start
    processes: int
    # The bodies' share of the CPU time the whole run used (the pool's processes and
    # the server's), from the burst's enqueue to its end: what the queue costs in CPU,
    # whatever else the machine runs (NaN when not measured).
    cpu_share: float = float("nan")
    overhead_ms: float = float("nan")  # CPU per job outside the bodies, every process
    by_role: dict[str, float] = field(default_factory=dict)  # that, ms per job by role


def single_body_s(ms: float, count: int = 30) -> float:
    """The body's wall time in one process with nothing else of the benchmark running:
    the median of `count` bodies run here."""
    times = []
    for _ in range(count):
        began = time.perf_counter()
        bodies.burn(ms)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def read_burst(path: str, single_s: float, cpu: dict[str, float] | None = None) -> Burst:
    """The figures of a span file; with `cpu` (CPU seconds by role over the burst,
    children included), the bodies' share of it."""
    by_process: dict[str, list[tuple[float, float]]] = {}
    body_cpu = 0.0
    with open(path) as handle:
        for line in handle:
            fields = line.split()
            if len(fields) == 5:
                by_process.setdefault(fields[2], []).append((float(fields[0]), float(fields[1])))
                body_cpu += float(fields[4]) - float(fields[3])
    every = sorted(span for spans in by_process.values() for span in spans)
    first_end = min(end for _, end in every)
    last_end = max(end for _, end in every)
    after_first = sum(1 for _, end in every if end > first_end)
    rate = after_first / (last_end - first_end) if last_end > first_end else 0.0
    gaps: list[float] = []
    for spans in by_process.values():
        spans.sort()
        gaps += [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)]
    last_ends = [max(end for _, end in spans) for spans in by_process.values()]
    first_starts = [min(start for start, _ in spans) for spans in by_process.values()]
    walls = [end - start for start, end in every]
    used = sum(cpu.values()) if cpu else 0.0
    roles = {role: 1000 * (seconds - (body_cpu if role == "children" else 0.0)) / len(every)
             for role, seconds in (cpu or {}).items()}
    return Burst(ratio=rate / (2 / single_s), stretch=statistics.fmean(walls) / single_s,
                 gap_ms=1000 * statistics.fmean(gaps) if gaps else 0.0,
                 tail_ms=1000 * (max(last_ends) - min(last_ends)),
                 start_ms=1000 * (max(first_starts) - min(first_starts)),
                 processes=len(by_process),
                 cpu_share=body_cpu / used if used else float("nan"),
                 overhead_ms=1000 * (used - body_cpu) / len(every) if used else float("nan"),
                 by_role=roles)


def describe(burst: Burst) -> str:
    return (f"{burst.ratio:>7.3f} {burst.stretch:>8.3f} {burst.gap_ms:>7.2f} "
            f"{burst.tail_ms:>7.0f} {burst.start_ms:>8.1f} {burst.cpu_share:>9.3f} "
            f"{burst.overhead_ms:>8.2f}")


HEADER = (f"{'ratio':>7} {'stretch':>8} {'gap ms':>7} {'tail ms':>7} {'start ms':>8} "
          f"{'CPU share':>9} {'CPU ms':>8}")


def measure(tree: Path, handlers: Path, count: int, ms: float,
            keep: Path | None = None) -> tuple[Burst, list[int]]:
    single = single_body_s(ms)
    out = subprocess.run([sys.executable, "-c", PROBE, str(tree), str(handlers), str(count),
                          str(ms)], capture_output=True, text=True, cwd=handlers)
    if out.returncode != 0:
        raise SystemExit(f"the run of {tree} failed: {out.stderr.strip()[-2000:]}")
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    burst = read_burst(answer["spans"], single, answer["cpu"])
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        kept = keep / f"{tree.name}-{time.strftime('%H%M%S')}.spans"
        kept.write_text(f"# single {single:.6f}\n" + Path(answer["spans"]).read_text())
    os.unlink(answer["spans"])
    return burst, answer["claims"]


def claims_text(claims: list[int], shown: int = 12) -> str:
    head = " ".join(map(str, claims[:shown]))
    tail = " ".join(map(str, claims[-shown:])) if len(claims) > 2 * shown else \
        " ".join(map(str, claims[shown:]))
    gap = " ..." if len(claims) > 2 * shown else ""
    return f"{len(claims)} claims: {head}{gap} {tail}".rstrip()


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench burst", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD",
                        help="the earlier commit to compare with (default HEAD)")
    parser.add_argument("--jobs", type=int, default=400, help="jobs in the burst (default 400)")
    parser.add_argument("--ms", type=float, default=33.0,
                        help="CPU time of each job's body, ms (default 33)")
    parser.add_argument("--pairs", type=int, default=3,
                        help="pairs of runs, one of each side, median (default 3)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy each run's span file into this folder (for a timeline)")
    args = parser.parse_args(argv)
    root = HERE.parent
    with tempfile.TemporaryDirectory(prefix="skiplock-burst-") as tmp, \
            worktree(args.against) as baseline, private_server():
        handlers = Path(tmp) / "handlers"
        handlers.mkdir()
        (handlers / "burst_handlers.py").write_text(HANDLERS)
        (handlers / "burst_bodies.py").write_text((HERE / "bodies.py").read_text())
        with scratch_database() as url:
            print(f"machine: {machine(url)}; load average {os.getloadavg()[0]:.2f}")
        print(f"a burst of {args.jobs} CPU-bound {args.ms:g} ms jobs into an idle pool of 2 "
              f"children, {args.pairs} pair(s) of runs in alternating order\n")
        print(f"{'':<22} {HEADER}  claims (jobs each)")
        sides: dict[str, list[Burst]] = {"before": [], "now": []}
        trees = {"before": baseline, "now": root}
        for pair in range(args.pairs):
            order = ("before", "now") if pair % 2 == 0 else ("now", "before")
            for name in order:
                burst, claims = measure(trees[name], handlers, args.jobs, args.ms, args.keep)
                sides[name].append(burst)
                roles = ", ".join(f"{role} {ms:.2f}" for role, ms in sorted(burst.by_role.items()))
                print(f"pair {pair + 1}, {name:<14} {describe(burst)}  {claims_text(claims)}"
                      f"\n{'':<23}CPU ms per job outside the bodies: {roles}", flush=True)
        print()
        for name, label in (("before", f"{args.against} (before)"), ("now", "this checkout")):
            runs = sides[name]
            figures = ("ratio", "stretch", "gap_ms", "tail_ms", "start_ms")
            median = Burst(*(statistics.median(getattr(r, f) for r in runs) for f in figures),
                           processes=2,
                           cpu_share=statistics.median(r.cpu_share for r in runs),
                           overhead_ms=statistics.median(r.overhead_ms for r in runs))
            print(f"{label[:22]:<22} {describe(median)}")
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end (2 cores; above 2 the "
              "machine was shared with other work)")
