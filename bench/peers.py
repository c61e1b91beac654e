"""skiplock beside PgQueuer, the fastest Python peer, in one run on one server.

    make bench-peers                   (creates .bench-venv with PgQueuer, then runs this)
    python -m bench peers --peer-python .bench-venv/bin/python [--jobs 20000] [--runs 3]

Both systems run the same job bodies (bench/bodies.py) with two job-running
processes each (skiplock: one master and `--concurrency 2`; PgQueuer: two
worker processes, `batch_size` 10), each against its own scratch database on
the same server, one after the other: a private PostgreSQL cluster with
default settings made for the run (`--shared-server`: the development one).
PgQueuer lives only in the bench-only
virtualenv: this process never imports it, it drives bench/peer_pgqueuer.py
with that virtualenv's Python.

Throughput is measured the same way for both. No-op jobs: the clock starts
when the first job of the backlog is taken and stops when the last one is
gone, both seen by polling the table every 10 ms. CPU-bound jobs (and the
bare body they are compared with): each body appends its wall-clock start
and end to a file, and the rate is the count over the first start to the
last end; a poller querying every 10 ms would take from the two cores a
share of CPU as large as the differences being measured. The same file gives
each process's CPU time between two of its bodies: the queue's own code
around a job, where the CPU-bound rate loses most of what it loses (a job
process's code goes cold in 10 ms: on the benchmark VM a `json.dumps` then
takes 20 times longer than hot). Pick-up latency is the wall time from just
before the enqueue call to the start of the job body (`record_pickup`), jobs
enqueued one by one into an idle pool. A burst (bench/burst.py) is
`--burst-jobs` CPU-bound jobs of `--burst-ms` enqueued in one call into a pool
idle for a second, its rate counted from the first body's end to the last
one's and set against 2 / the body's single-process time, measured just
before each run. The limit line sets skiplock's no-op rate against what
pgbench gets from the same table on the same server: two clients, each
claiming 100 jobs in one statement (the claim's index, SKIP LOCKED) and
completing them in a second, a commit each, with nothing else around them. Each run measures both sides of a
ratio one right after the other; every figure is the median of `--runs` runs,
and the ratio the median of the runs' ratios. Every target of the speed work
is printed as a ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from bench import bodies, burst
from bench.common import (
    WORKER_FLAGS,
    StealMeter,
    fill,
    machine,
    percentile,
    pgbench,
    private_server,
    scratch_database,
    sql,
)
from skiplock import queue_core as q
from skiplock.queue_core.database import scratch
from skiplock.queue_core.database.urls import libpq_dsn

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "peer_pgqueuer.py"
CPU_MS = 10


class Poller:
    """One autocommit connection that asks the cheap questions the clock needs."""

    def __init__(self, url: str, started: str, remaining: str) -> None:
        self.conn = psycopg2.connect(libpq_dsn(url))
        self.conn.autocommit = True
        self.started, self.remaining = started, remaining

    def ask(self, statement: str) -> bool:
        with self.conn.cursor() as cur:
            cur.execute(statement)
            return bool(cur.fetchone()[0])

    def close(self) -> None:
        self.conn.close()


SKIPLOCK_POLL = (
    """SELECT EXISTS (SELECT 1 FROM "WorkerJob" WHERE status <> 'PENDING')""",
    """SELECT EXISTS (SELECT 1 FROM "WorkerJob" WHERE status IN ('PENDING', 'PROCESSING'))""",
)
PGQUEUER_POLL = (
    """SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE status <> 'queued')
           OR NOT EXISTS (SELECT 1 FROM pgqueuer)""",
    """SELECT EXISTS (SELECT 1 FROM pgqueuer)""",
)


def timed_drain(poller: Poller, timeout: float = 300, period: float = 0.01) -> float:
    """Seconds from the first job taken to the last one gone (to within `period`)."""
    deadline = time.monotonic() + timeout
    while not poller.ask(poller.started):
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out waiting for the workers to start")
        time.sleep(0.002)
    began = time.perf_counter()
    while poller.ask(poller.remaining):
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out waiting for the workers")
        time.sleep(period)
    return time.perf_counter() - began


@contextmanager
def processes(commands: list[list[str]], env: dict[str, str]) -> Any:
    procs = [subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for cmd in commands]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Skiplock:
    name = "skiplock"

    def __init__(self, url: str, extra: list[str]) -> None:
        self.url, self.extra = url, extra

    def workers(self, env: dict[str, str]) -> Any:
        cmd = [sys.executable, "-m", "skiplock", "worker", *WORKER_FLAGS, "--concurrency", "2",
               *self.extra]
        return processes([cmd], {**env, "DATABASE_URL": self.url})

    def fill(self, kind: str, count: int, payload: dict[str, Any]) -> None:
        sql(self.url, 'TRUNCATE "WorkerJob"')
        fill(count, {"noop": "BENCH_NOOP", "cpu": "BENCH_CPU"}[kind], payload)

    def poller(self) -> Poller:
        return Poller(self.url, *SKIPLOCK_POLL)

    def enqueue_pickup(self, count: int, gap_s: float) -> None:
        for _ in range(count):
            q.enqueue("BENCH_PICKUP", {"t0": time.time()})
            time.sleep(gap_s)

    def bulk(self, count: int, batch: int) -> float:
        jobs = [{"type": "BENCH_NOOP", "payload": {}} for _ in range(batch)]
        began = time.perf_counter()
        for start in range(0, count, batch):
            q.enqueue_many(jobs[: min(batch, count - start)])
        return count / (time.perf_counter() - began)

    def single(self, count: int) -> float:
        began = time.perf_counter()
        for _ in range(count):
            q.enqueue("BENCH_NOOP", {})
        return count / (time.perf_counter() - began)

    def burst(self, count: int, payload: dict[str, Any]) -> None:
        q.enqueue_many([{"type": "BENCH_CPU", "payload": payload} for _ in range(count)])


class PgQueuer:
    name = "PgQueuer"

    def __init__(self, url: str, python: str) -> None:
        # asyncpg reads only URIs (not libpq's key=value form); psycopg2 reads both.
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.python = python
        self.call("install")

    def call(self, *args: Any) -> dict[str, Any]:
        out = subprocess.run([self.python, str(PEER_SCRIPT), args[0], self.dsn,
                              *map(str, args[1:])], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"PgQueuer's side failed: {out.stderr.strip()[-2000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def workers(self, env: dict[str, str]) -> Any:
        cmd = [self.python, str(PEER_SCRIPT), "worker", self.dsn, "10"]
        return processes([cmd, cmd], env)

    def fill(self, kind: str, count: int, payload: dict[str, Any]) -> None:
        sql(self.dsn, "TRUNCATE pgqueuer")
        self.call("fill", kind, count, json.dumps(payload))

    def poller(self) -> Poller:
        return Poller(self.dsn, *PGQUEUER_POLL)

    def enqueue_pickup(self, count: int, gap_s: float) -> None:
        self.call("pickup", count, gap_s)

    def bulk(self, count: int, batch: int) -> float:
        return float(self.call("bulk", count, batch)["rate"])

    def single(self, count: int) -> float:
        return float(self.call("single", count)["rate"])

    def burst(self, count: int, payload: dict[str, Any]) -> None:
        self.call("burst", count, json.dumps(payload))


System = Skiplock | PgQueuer


def throughput(system: System, kind: str, count: int, payload: dict[str, Any]) -> float:
    """Jobs/s of no-op jobs, timed by the poller (CPU-bound runs: `cpu_spans`)."""
    system.fill(kind, count, payload)
    poller = system.poller()
    try:
        with system.workers(dict(os.environ)):
            seconds = timed_drain(poller)
        return count / seconds
    finally:
        poller.close()


def cpu_spans(system: System, count: int, payload: dict[str, Any]) -> bodies.Spans:
    """A CPU-bound run, timed from the bodies' own spans (bodies.burn), with the poller
    only waiting, slowly, for the queue to drain."""
    system.fill("cpu", count, payload)
    poller = system.poller()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spans = str(Path(tmp) / "spans")
            with system.workers({**os.environ, "BENCH_SPAN_FILE": spans}):
                timed_drain(poller, period=0.1)
            return bodies.read_spans(spans)
    finally:
        poller.close()


def _listening(url: str, count: int, timeout: float = 10.0) -> None:
    """Wait until `count` sessions of the database listen (the pool is up and idle), or
    `timeout`, and one second more."""
    poller = Poller(url, f"SELECT count(*) >= {count} FROM pg_stat_activity "
                         "WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
                    "SELECT true")
    try:
        deadline = time.monotonic() + timeout
        while not poller.ask(poller.started) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.close()
    time.sleep(1.0)


def burst_run(system: System, count: int, ms: float) -> burst.Burst:
    """A burst of `count` CPU-bound jobs enqueued in one call into an idle pool."""
    system.fill("cpu", 0, {})
    single = burst.single_body_s(ms)
    with tempfile.TemporaryDirectory() as tmp:
        spans = Path(tmp) / "spans"
        with system.workers({**os.environ, "BENCH_SPAN_FILE": str(spans)}):
            _listening(system.url if isinstance(system, Skiplock) else system.dsn, 2)
            system.burst(count, {"ms": ms})
            deadline = time.monotonic() + 120 + count * ms / 1000
            while not spans.exists() or len(spans.read_text().splitlines()) < count:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{system.name} did not run the whole burst")
                time.sleep(0.1)
        return burst.read_burst(str(spans), single)


# pgbench's claim and completion: the claim's index and its SKIP LOCKED, 100 jobs a
# statement, a commit each; nothing of skiplock's (no lease, fence, share or result).
_CLAIM_100 = """
UPDATE "WorkerJob" SET status = 'PROCESSING', attempts = attempts + 1, "lockedAt" = now(),
    "startedAt" = now(), "lockedBy" = 'pgbench:' || :client_id
WHERE id IN (SELECT id FROM "WorkerJob" WHERE status = 'PENDING' AND "heldBack" IS NULL
             AND "availableAt" <= now() ORDER BY priority DESC, "availableAt" ASC LIMIT 100
             FOR UPDATE SKIP LOCKED);
"""
_COMPLETE_100 = """
UPDATE "WorkerJob" SET status = 'COMPLETED', "completedAt" = now(), "lockedAt" = NULL,
    "lockedBy" = NULL
WHERE status = 'PROCESSING' AND "lockedBy" = 'pgbench:' || :client_id;
"""
# pgbench reads one statement a line.
LIMIT_SCRIPT = "".join(" ".join(part.split()) + "\n" for part in (_CLAIM_100, _COMPLETE_100))


def pgbench_limit(url: str, count: int, clients: int = 2) -> float:
    """Jobs/s of pgbench's claim-100 + complete-100 with `clients` clients, draining a
    backlog of `count` no-op jobs (as the pool's no-op line does)."""
    sql(url, 'TRUNCATE "WorkerJob"')
    fill(count, "BENCH_NOOP", {})
    per_client = max(1, count // (100 * clients))
    # A pgbench transaction is the script: two statements, two commits, 100 jobs.
    return 100 * pgbench(url, LIMIT_SCRIPT, clients=clients, transactions=per_client)


def pickup(system: System, count: int, gap_s: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pickup"
        env = {**os.environ, "BENCH_PICKUP_FILE": str(path)}
        with system.workers(env):
            system.enqueue_pickup(1, 0)  # the pool is up once this one ran
            deadline = time.monotonic() + 60
            while not path.exists() or not path.read_text().strip():
                if time.monotonic() > deadline:
                    raise SystemExit(f"{system.name} never picked up a job")
                time.sleep(0.05)
            time.sleep(1.0)  # idle: the pool waits for work, as it would in production
            path.unlink()
            system.enqueue_pickup(count, gap_s)
            while not path.exists() or len(path.read_text().split()) < count:
                if time.monotonic() > deadline + 120:
                    raise SystemExit(f"{system.name} did not pick up every job")
                time.sleep(0.05)
        waits = [float(line) * 1000 for line in path.read_text().split()]
    return percentile(waits, 0.5), percentile(waits, 0.99)


def _burn_many(args: tuple[int, int, str]) -> None:
    count, ms, spans = args
    os.environ["BENCH_SPAN_FILE"] = spans
    for _ in range(count):
        bodies.burn(ms)


@dataclass(frozen=True)
class CpuRun:
    """A CPU-bound run's spans, and the CPU time the hypervisor took from the machine's
    cores within them. Stolen time is lost to the bare body and to a queue alike, but
    not equally from one run to the next: on the 2-core VMs of these figures it was
    1 % of the cores in one run and 12 % in the next, more than the differences the
    CPU-bound line is about."""

    spans: bodies.Spans
    stolen_s: float

    @property
    def steal(self) -> float:
        """The share of the cores' time stolen between the first start and the last end."""
        span = self.spans.last_end - self.spans.first_start
        return self.stolen_s / (span * (os.cpu_count() or 1)) if span > 0 else 0.0

    @property
    def rate_less_steal(self) -> float:
        """Jobs/s over the time the cores were the machine's own."""
        return self.spans.rate / max(1e-9, 1 - self.steal)


def metered(run: Callable[[], bodies.Spans]) -> CpuRun:
    with StealMeter() as meter:
        spans = run()
    return CpuRun(spans, meter.within(spans.first_start, spans.last_end))


def bare_cpu_spans(count: int, ms: int) -> bodies.Spans:
    """The bare job body in two processes, no queue at all, timed from the bodies'
    spans as the queues' CPU-bound runs are."""
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp, ctx.Pool(2) as pool:
        spans = str(Path(tmp) / "spans")
        pool.map(_burn_many, [(count // 2, ms, spans), (count - count // 2, ms, spans)])
        return bodies.read_spans(spans)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default=str(HERE.parent / ".bench-venv/bin/python"),
                        help="Python of the bench-only virtualenv that has pgqueuer "
                             "(default .bench-venv/bin/python; `make bench-peers` makes it)")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op backlog (default 20000)")
    parser.add_argument("--cpu-jobs", type=int, default=2000,
                        help=f"CPU-bound jobs of {CPU_MS} ms (default 2000: runs of 10 s, "
                             "a backlog drained in its steady state, as the speed issue's "
                             "20,000-job backlog is; with 400 a run's start and end weigh "
                             "five times as much)")
    parser.add_argument("--burst-jobs", type=int, default=400,
                        help="CPU-bound jobs enqueued in one call into an idle pool (default 400)")
    parser.add_argument("--burst-ms", type=float, default=33.0,
                        help="CPU time of each burst job's body, ms (default 33)")
    parser.add_argument("--limit-jobs", type=int, default=100_000,
                        help="no-op backlog of the limit line, drained by the pool and by "
                             "pgbench's claim-100 + complete-100 in turn (default 100000)")
    parser.add_argument("--pickups", type=int, default=200,
                        help="jobs enqueued one by one into an idle pool (default 200: its p99 "
                             "is the 198th, not one stall of the VM)")
    parser.add_argument("--enqueues", type=int, default=3000,
                        help="single enqueue() calls (default 3000)")
    parser.add_argument("--bulk", type=int, default=100_000,
                        help="jobs enqueued in batches of 5000 (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure, median (default 3)")
    parser.add_argument("--shared-server", action="store_true",
                        help="use the development server instead of a private cluster with "
                             "default settings made for the run")
    parser.add_argument("--skiplock-flags", default="",
                        help="extra `skiplock worker` flags, e.g. '--commit-delay-ms 0'")
    parser.add_argument("--only", choices=("all", "enqueue", "burst", "limit"), default="all",
                        help="'enqueue': only the three enqueue lines, no pool started "
                             "(for working on enqueue); 'burst': only the burst lines; "
                             "'limit': only the limit line (default all)")
    args = parser.parse_args(argv)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"{args.peer_python} not found: run `make bench-peers`, which "
                         "installs PgQueuer into the bench-only virtualenv .bench-venv")
    runs = args.runs

    # The peer's database first: the inner one sets DATABASE_URL, which is skiplock's.
    with private_server(not args.shared_server), \
            scratch.scratch_database("skiplock_bench_peer") as peer_url, scratch_database() as url:
        print(f"machine: {machine(url)}; load average {os.getloadavg()[0]:.2f} at the start")
        ours, theirs = Skiplock(url, args.skiplock_flags.split()), PgQueuer(peer_url, args.peer_python)
        print(f"{runs} run(s) per figure, median; 2 job-running processes per system\n", flush=True)

        def line(label: str, pairs: list[tuple[float, float]], unit: str, target: str) -> None:
            """Medians of each side and of the per-run ratio: the two sides of a run were
            measured one right after the other, so a busy moment hits both."""
            mine = statistics.median(p[0] for p in pairs)
            peer = statistics.median(p[1] for p in pairs)
            ratio = statistics.median(p[0] / p[1] for p in pairs if p[1])
            print(f"{label:<50} {mine:>10.1f} {peer:>10.1f} {unit:<7} {ratio:>6.3f}  {target}",
                  flush=True)

        def paired(first: Callable[[], float], second: Callable[[], float]
                   ) -> list[tuple[float, float]]:
            return [(first(), second()) for _ in range(runs)]

        print(f"{'':<50} {'skiplock':>10} {'reference':>10} {'':<7} {'ratio':>6}  target")
        if args.only in ("all", "limit"):
            line(f"no-op jobs/s vs pgbench claim-100 + complete-100 ({args.limit_jobs})",
                 paired(lambda: throughput(ours, "noop", args.limit_jobs, {}),
                        lambda: pgbench_limit(url, args.limit_jobs)), "jobs/s",
                 "(higher is better; 0.28 on 2026-12-05)")
        if args.only in ("all", "burst"):
            bursts = [(burst_run(ours, args.burst_jobs, args.burst_ms),
                       burst_run(theirs, args.burst_jobs, args.burst_ms)) for _ in range(runs)]
            label = f"burst of {args.burst_jobs} x {args.burst_ms:g} ms vs 2 / the body alone"
            mine = statistics.median(o.ratio for o, _ in bursts)
            peer = statistics.median(t.ratio for _, t in bursts)
            print(f"{label:<50} {mine:>10.3f} {peer:>10.3f} {'x bare':<7} {mine:>6.3f}  >= 0.95 "
                  "(reference: PgQueuer's)", flush=True)
            print(f"{'  each run: stretch, gap ms, tail ms':<50} " + "  ".join(
                f"{o.ratio:.3f} ({o.stretch:.2f}, {o.gap_ms:.1f}, {o.tail_ms:.0f}) / "
                f"{t.ratio:.3f} ({t.stretch:.2f}, {t.gap_ms:.1f}, {t.tail_ms:.0f})"
                for o, t in bursts) + "  (skiplock / PgQueuer; bench/burst.py)", flush=True)
        if args.only == "all":
            line(f"no-op jobs/s ({args.jobs} backlog) vs PgQueuer",
                 paired(lambda: throughput(ours, "noop", args.jobs, {}),
                        lambda: throughput(theirs, "noop", args.jobs, {})), "jobs/s", ">= 1.5")

            payload = {"ms": CPU_MS}
            metered_runs = [(metered(lambda: bare_cpu_spans(args.cpu_jobs, CPU_MS)),
                             metered(lambda: cpu_spans(ours, args.cpu_jobs, payload)),
                             metered(lambda: cpu_spans(theirs, args.cpu_jobs, payload)))
                            for _ in range(runs)]
            cpu = [(b.spans, o.spans, t.spans) for b, o, t in metered_runs]
            line(f"CPU-bound {CPU_MS} ms jobs/s vs the bare body, 2 procs",
                 [(o.rate, b.rate) for b, o, _ in cpu], "jobs/s", ">= 0.95")
            print(f"{'  each run':<50} " + "  ".join(
                f"{o.rate / b.rate:.3f} (steal {mb.steal:.0%} / {mo.steal:.0%})"
                for (b, o, _), (mb, mo, _) in zip(cpu, metered_runs, strict=True))
                + "  (ratio; the VM's steal, bare / skiplock)")
            line("  the same, the VM's stolen CPU taken out of each",
                 [(o.rate_less_steal, b.rate_less_steal) for b, o, _ in metered_runs],
                 "jobs/s", "(reference)")
            line("  PgQueuer's CPU-bound jobs/s vs the bare body",
                 [(t.rate, b.rate) for b, _, t in cpu], "jobs/s", "(reference)")
            line("  PgQueuer's, the VM's stolen CPU taken out of each",
                 [(t.rate_less_steal, b.rate_less_steal) for b, _, t in metered_runs],
                 "jobs/s", "(reference)")
            bare_between = statistics.median(b.between_us for b, _, _ in cpu)
            line("  CPU between two bodies, per job, vs PgQueuer",
                 [(o.between_us, t.between_us) for _, o, t in cpu], "us/job",
                 f"(lower is better; the bare body's own {bare_between:.0f})")

            gap = 0.05
            picks_ours: list[tuple[float, float]] = []
            picks_theirs: list[tuple[float, float]] = []
            for _ in range(runs):
                picks_ours.append(pickup(ours, args.pickups, gap))
                picks_theirs.append(pickup(theirs, args.pickups, gap))
            picks = [(o[0], t[0]) for o, t in zip(picks_ours, picks_theirs, strict=True)]
            line("pick-up into an idle pool, p50 ms vs PgQueuer", picks, "ms", "(lower is better)")
            picks = [(o[1], t[1]) for o, t in zip(picks_ours, picks_theirs, strict=True)]
            line("pick-up into an idle pool, p99 ms vs PgQueuer", picks, "ms",
                 "skiplock p99 <= about 4 ms")

        if args.only in ("burst", "limit"):
            print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
            return
        sql(url, 'CREATE TABLE bench_insert (LIKE "WorkerJob" INCLUDING ALL)')
        insert = ("INSERT INTO bench_insert (id, type, payload) "
                  "VALUES (md5(random()::text), 'BENCH_NOOP', '{}');\n")
        singles = [(ours.single(args.enqueues), pgbench(url, insert, clients=1, seconds=3),
                    theirs.single(args.enqueues)) for _ in range(runs)]
        line("single enqueue() jobs/s vs pgbench 1-row INSERT", [(o, b) for o, b, _ in singles],
             "jobs/s", ">= 0.8")
        line("  single enqueue() jobs/s vs PgQueuer's", [(o, t) for o, _, t in singles],
             "jobs/s", "(reference)")
        line("enqueue_many jobs/s vs PgQueuer's bulk enqueue",
             paired(lambda: ours.bulk(args.bulk, 5000), lambda: theirs.bulk(args.bulk, 5000)),
             "jobs/s", ">= 1.0")
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end (2 cores; above 2 the "
              "machine was shared with other work)")
