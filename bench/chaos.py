"""A chaos soak (not a speed benchmark): process kills and database faults against real pools.

    python -m bench chaos [--jobs 200] [--seconds 60] [--pools 3] [--seeds 1 2 3]
    make chaos ARGS="--seeds 1 2 3"

For each seed: a private PostgreSQL cluster of its own (so it may be
restarted), CHAOS_WORK jobs (bench/chaos_handlers.py; one in four runs
longer than a rescue takes) fed a few at a time while the faults run, and
`--pools` real `skiplock worker` pools (heartbeat 0.5 s, stuck timeout 3 s),
each reaching the database through a proxy of its own that can freeze. Then,
for `--seconds`, one fault after another, chosen by the seed:

- SIGKILL of a child, or of a master (restarted at once);
- pg_terminate_backend of random pool connections;
- the database read-only for a few seconds (every pool connection terminated
  first, so they come back read-only, as after a failover);
- a restart of the cluster;
- a row lock on a running job, or a lock on the whole job table, held past the
  stuck timeout;
- a hang: one pool's proxy (a partition: the others still reach the database)
  or every proxy (the server accepts and never answers) frozen past the stuck
  timeout.

Then the faults stop, the queue drains and the pools are stopped with TERM,
and the invariants are checked, from the effects log every run of a job
writes to (a file, so that a run cut off from the database still leaves its
trace) and from a trigger that records every status transition:

- no two runs of one job overlap in time;
- every job is COMPLETED, with exactly one transition to COMPLETED and one
  committed run, or DEAD_LETTER with a lastError;
- nothing is left PENDING or PROCESSING; every master exited 0; no stray
  process is left.

Workflows ride along (queue_core/features/dependencies.py, batches.py): some
top-ups enqueue a few parents (one in five fails for good), a dependent of
them with a random policy (cancel, run, hold), sometimes a dependent of that
one, and a batch of three with a callback; the fault "cancel parent" cancels
a parent while it waits or runs. Their invariants:

- no dependent started before every one of its parents ended (the times of the
  status transitions);
- none is stranded: a job still waiting after the drain is one that a parent
  which did not complete holds (policy hold), or a dependent of such a job,
  and every waiting job's count is its unresolved edges;
- each batch's callback was made ready once and completed once, after its
  last member ended (one callback job per batch, counts for every member).

Rate limits ride along (bench/chaos_rates.py): a few jobs per top-up at 3 per
2 seconds on one of three keys; no key ever sees four starts within two seconds.

Exits 1 if any invariant fails. Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

import skiplock
from skiplock.queue_core import enqueue_many
from skiplock.queue_core.database import migrate
from skiplock.queue_core.database.embedded import EmbeddedCluster, find_bindir
from skiplock.queue_core.database.urls import libpq_dsn
from skiplock.queue_core.sql import SEQUENCE_LINE
from tests.pool.proxy import FreezableProxy

REPO = Path(__file__).resolve().parent.parent
HANDLERS = "bench.chaos_handlers"
HEARTBEAT_S = 0.5
STUCK_S = 3.0
HOLD_S = STUCK_S * 2 + 1  # how long a lock or a hang lasts: past a rescue by another pool
# A dependent that waits for its parents (queue_core/features/dependencies.py).
# ("heldBack" false with nothing to wait for is a fair job waiting its turn: 0021_fairness.)
WAITING = """(j.status = 'PENDING' AND NOT coalesce(j."heldBack", true) AND j."waitingFor" > 0)"""
# A job of a sequence that waits for its turn (queue_core/features/sequences.py): its
# key's head is another job, unfinished or dead-lettered under the policy hold.
IN_LINE = ("""(j."sequenceKey" IS NOT NULL AND EXISTS (
    SELECT FROM "WorkerJob" AS h WHERE """ + SEQUENCE_LINE.format(a="h.", k='j."sequenceKey"')
           + """ AND h."sequenceNo" < j."sequenceNo"))""")
# One that waits with no reason to: no parent it waits for is unfinished, none that
# did not complete holds it (policy hold), and it is not in a sequence's line. One
# held, and its own dependents, wait for a person by design: the drain does not wait
# for them.
STRANDED = f"""({WAITING} AND NOT {IN_LINE} AND NOT EXISTS (
    SELECT FROM "WorkerJobDependency" AS d JOIN "WorkerJob" AS p ON p.id = d.parent
    WHERE d.child = j.id AND d."resolvedAt" IS NULL
      AND (p.status IN ('PENDING', 'PROCESSING')
           OR (d.policy = 'hold' AND p.status IN ('DEAD_LETTER', 'FAILED')))))"""

SETUP = [
    """CREATE TABLE pool_test_runs (job_id text NOT NULL, pid integer NOT NULL,
       started timestamptz NOT NULL, finished timestamptz NOT NULL)""",
    """CREATE TABLE chaos_transitions (job_id text NOT NULL, old_status text, new_status text,
       locked_by text, attempts int, at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    """CREATE FUNCTION chaos_transition() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.status IS DISTINCT FROM OLD.status THEN
           INSERT INTO chaos_transitions (job_id, old_status, new_status, locked_by, attempts)
           VALUES (NEW.id, OLD.status::text, NEW.status::text,
                   COALESCE(NEW."lockedBy", OLD."lockedBy"), NEW.attempts);
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER chaos_transition AFTER UPDATE ON "WorkerJob"
       FOR EACH ROW EXECUTE FUNCTION chaos_transition()""",
]


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


def _processes_with(needle: str) -> list[int]:
    """Processes whose environment holds `needle` (this run's strays, at the end)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if needle.encode() in environ.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


# Flow-control workloads (issue 30): each module `bench/chaos_NAME.py` has
#   enqueue(soak, conn) -> int         adds a few of its jobs in the top-up's transaction
#                                      (soak.job_rng, soak.payload()), returns how many;
#   check(soak, conn) -> (bool, str)   its invariant after the drain, and one line saying it;
#   held(conn) -> int                  its PENDING jobs that rightly stay (held for a person).
FLOWS: list[str] = [
    "bench.chaos_debounce",
    "bench.chaos_sequences",
    "bench.chaos_fairness",
    "bench.chaos_rates",
]


def _flows() -> list[Any]:
    return [importlib.import_module(name) for name in FLOWS]


class Soak:
    """One seed's soak. bench/soak.py (many hosts) derives from it: the hooks it
    overrides are the lease settings below, `start_cluster`, `pool_command`,
    `pool_url`, `top_up`, `chaos` and `teardown`; the drain and every invariant
    check are shared."""

    heartbeat = HEARTBEAT_S
    stuck = STUCK_S
    long_share = 1 / 4  # of the jobs: outlive a rescue (see `duration`)
    concurrency = 2  # children per pool
    log_level = "INFO"
    prefix = "skiplock-chaos"

    def __init__(self, seed: int, jobs: int, seconds: float, pools: int,
                 only: list[str] | None = None) -> None:
        self.only = only or []
        self.rng = random.Random(seed)  # the faults: the same sequence for the same seed
        self.job_rng = random.Random(-seed)  # the jobs, drawn as the queue empties
        self.pick = random.Random(seed * 7919)  # which process, backend or pool a fault hits
        self.seed, self.jobs, self.seconds, self.npools = seed, jobs, seconds, pools
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-{seed}-", dir="/tmp"))
        self.base.chmod(0o755)  # the cluster runs as an unprivileged user when we are root
        self.cluster = EmbeddedCluster(self.base / "cluster")
        self.effects = self.base / "effects.log"
        self.run_id = f"{self.prefix}-{os.getpid()}-{seed}"
        self.faults: collections.Counter[str] = collections.Counter()
        self.pools: list[subprocess.Popen[bytes]] = []
        self.proxies: list[FreezableProxy] = []
        self.codes: list[int] = []
        self.url = ""
        self.engine: Engine | None = None
        self.enqueued = 0

    # -- set-up --------------------------------------------------------------

    def setup(self) -> None:
        self.url = self.start_cluster()
        self.open_database()
        socket = str(self.cluster.socket_dir / ".s.PGSQL.5432")
        self.proxies = [FreezableProxy(unix_socket=socket) for _ in range(self.npools)]
        self.pools = [self.start(i) for i in range(self.npools)]

    def start_cluster(self) -> str:
        return self.cluster.ensure_running()

    def open_database(self) -> None:
        """The schema, the soak's engine, and the tables and trigger the checks read."""
        migrate.upgrade(self.url)
        self.engine = create_engine(self.url, pool_pre_ping=True)
        with self.engine.begin() as conn:
            for statement in SETUP:
                conn.execute(text(statement))
        self.enqueued = 0

    def top_up(self, backlog: int) -> None:
        """Keep the queue short while the faults run: a rescued job then runs again at
        once on an idle child instead of waiting behind a long backlog, which is when
        a run that was not stopped in time would overlap with it."""
        assert self.engine is not None
        try:
            with self.engine.begin() as conn:
                pending = conn.execute(text(
                    """SELECT count(*) FROM "WorkerJob" WHERE status = 'PENDING'""")).scalar()
                n = min(max(0, backlog - int(pending or 0)), self.jobs - self.enqueued)
                if n:
                    enqueue_many([{"type": "CHAOS_WORK", "payload": self.payload(),
                                   "max_attempts": 8} for _ in range(n)], conn=conn)
                room = self.enqueued + n < self.jobs
                made = self.workflow(conn) if room and self.job_rng.random() < 0.7 else 0
                for flow in _flows():
                    if self.enqueued + n + made < self.jobs:
                        made += flow.enqueue(self, conn)
        except Exception as exc:  # noqa: BLE001 - the database is having one of its faults
            print(f"  (top-up: {exc.__class__.__name__})")
            return
        self.enqueued += n + made

    def workflow(self, conn: Any) -> int:
        """A few parents and their dependents, and a batch with its callback; how many
        jobs that made."""
        rng = self.job_rng
        parents = rng.randint(1, 4)
        jobs: list[dict[str, Any]] = [
            {"type": "CHAOS_WORK", "max_attempts": 8,
             "payload": {**self.payload(), **({"fail": True} if rng.random() < 0.2 else {})}}
            for _ in range(parents)]
        jobs.append({"type": "CHAOS_WORK", "payload": self.payload(), "max_attempts": 8,
                     "depends_on": list(range(parents)),
                     "on_parent_failure": rng.choice(("cancel", "run", "hold"))})
        if rng.random() < 0.5:
            jobs.append({"type": "CHAOS_WORK", "payload": self.payload(), "max_attempts": 8,
                         "depends_on": [parents], "on_parent_failure": "cancel"})
        enqueue_many(jobs, conn=conn)
        with skiplock.batch(on_complete=("CHAOS_WORK", {"seconds": 0.1, "callback": True}),
                            on_failure=("CHAOS_WORK", {"seconds": 0.1, "callback": True,
                                                       "some_failed": True}), conn=conn):
            enqueue_many([{"type": "CHAOS_WORK", "max_attempts": 8,
                           "payload": {**self.payload(),
                                       **({"fail": True} if rng.random() < 0.1 else {})}}
                          for _ in range(3)], conn=conn)
        return len(jobs) + 4

    def payload(self) -> dict[str, object]:
        """One job in three writes nothing to the database (its group commits alone)."""
        quiet = self.job_rng.random() < 1 / 3
        return {"seconds": self.duration(), **({"quiet": True} if quiet else {})}

    def duration(self) -> float:
        """Most jobs are short; one in four outlives a rescue (the stuck timeout and a
        recovery interval), so that a run cut off from the database would still be
        running when another pool rescues it, unless it was fenced."""
        if self.job_rng.random() < self.long_share:
            return round(self.job_rng.uniform(2 * self.stuck + 1, 2 * self.stuck + 5), 2)
        return round(self.job_rng.uniform(0.05, 1.0), 2)

    def pool_url(self, index: int) -> str:
        return self.proxies[index].url(self.url)

    def pool_command(self, index: int, argv: list[str]) -> list[str]:
        return argv

    def start(self, index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DATABASE_URL": self.pool_url(index),
               "SKIPLOCK_CHAOS_EFFECTS": str(self.effects), "SKIPLOCK_CHAOS_RUN": self.run_id,
               "PYTHONPATH": str(REPO)}
        log = open(self.base / f"pool-{index}.log", "ab")  # noqa: SIM115 - inherited, then closed
        try:
            return subprocess.Popen(self.pool_command(index, [
                sys.executable, "-m", "skiplock", "worker", "--handlers", HANDLERS,
                "--concurrency", str(self.concurrency), "--heartbeat", str(self.heartbeat),
                "--stuck-timeout", str(self.stuck), "--graceful-timeout", "5",
                "--poll-max", "0.5", "--log-level", self.log_level]),
                cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    # -- the faults ------------------------------------------------------------

    def sql(self, statement: str, database: str | None = None) -> list[Any]:
        """One statement in autocommit, on a fresh connection (the faults break pools)."""
        url = self.url if database is None else make_url(self.url).set(
            database=database).render_as_string(hide_password=False)
        conn = psycopg2.connect(libpq_dsn(url), connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def terminate(self, share: float = 1.0) -> None:
        rows = self.sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name LIKE 'skiplock[%' AND pid <> pg_backend_pid()")
        for (pid,) in rows:
            if self.pick.random() < share:
                self.sql(f"SELECT pg_terminate_backend({int(pid)})")

    def kill_child(self) -> None:
        kids = _children(self.pools[self.pick.randrange(len(self.pools))].pid)
        if kids:
            os.kill(self.pick.choice(kids), signal.SIGKILL)

    def kill_master(self) -> None:
        i = self.pick.randrange(len(self.pools))
        self.pools[i].kill()
        self.pools[i].wait()
        self.pools[i] = self.start(i)

    def read_only(self) -> None:
        name = make_url(self.url).database
        self.sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on', "postgres")
        try:
            self.terminate()
            time.sleep(self.pick.uniform(1.0, 4.0))
        finally:
            self.sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only', "postgres")

    def restart(self) -> None:
        """An immediate shutdown (as a crash or a failover: no backend is waited for),
        then a start with crash recovery."""
        assert self.engine is not None
        self.engine.dispose()
        self.stop_cluster()
        time.sleep(self.pick.uniform(0.5, 2.0))
        self.start_cluster()

    def stop_cluster(self) -> None:
        bindir = find_bindir()
        assert bindir is not None
        self.cluster._run([str(bindir / "pg_ctl"), "-D", str(self.cluster.data_dir),
                           "-m", "immediate", "-w", "stop"], "stop the cluster")

    def hold(self, lock: str) -> None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            transaction = conn.begin()
            conn.execute(text(lock))
            time.sleep(HOLD_S)
            transaction.rollback()

    def row_lock(self) -> None:
        self.hold("""SELECT 1 FROM "WorkerJob" WHERE id = (SELECT id FROM "WorkerJob"
                     WHERE status = 'PROCESSING' ORDER BY random() LIMIT 1) FOR UPDATE""")

    def table_lock(self) -> None:
        self.hold('LOCK TABLE "WorkerJob" IN ACCESS EXCLUSIVE MODE')

    def cancel_parent(self) -> None:
        """Cancel a parent while it waits or runs: its dependents' policies apply."""
        rows = self.sql("""SELECT id FROM "WorkerJob" WHERE "hasDependents"
                           AND status IN ('PENDING', 'PROCESSING')""")
        if rows:
            assert self.engine is not None
            with self.engine.begin() as conn:
                skiplock.cancel(self.pick.choice(rows)[0], by="chaos", conn=conn)

    def hang(self, everyone: bool) -> None:
        frozen = self.proxies if everyone else [self.pick.choice(self.proxies)]
        for proxy in frozen:
            proxy.freeze()
        try:
            time.sleep(HOLD_S)
        finally:
            for proxy in frozen:
                proxy.thaw()

    def chaos(self) -> None:
        faults: list[tuple[str, float, Callable[[], None]]] = [
            ("kill child", 4, self.kill_child),
            ("kill master", 1, self.kill_master),
            ("terminate backends", 2, lambda: self.terminate(0.5)),
            ("read-only", 1, self.read_only),
            ("restart", 1, self.restart),
            ("row lock", 1, self.row_lock),
            ("table lock", 1, self.table_lock),
            ("partition", 1, lambda: self.hang(False)),
            ("hang", 1, lambda: self.hang(True)),
            ("cancel parent", 2, self.cancel_parent),
        ]
        if self.only:
            faults = [f for f in faults if f[0].replace(" ", "-") in self.only]
        names, weights, actions = zip(*faults, strict=True)
        stop_at = time.monotonic() + self.seconds
        while time.monotonic() < stop_at:
            self.top_up(backlog=4)
            time.sleep(self.rng.uniform(0.3, 1.2))
            i = self.rng.choices(range(len(faults)), weights=weights)[0]
            self.faults[names[i]] += 1
            try:
                actions[i]()
            except psycopg2.Error as exc:  # a fault on top of a fault (the server restarting)
                print(f"  ({names[i]}: {str(exc).strip().splitlines()[0]})")

    # -- the end ---------------------------------------------------------------

    def drain(self) -> None:
        assert self.engine is not None
        deadline = time.monotonic() + 240
        while self.enqueued < self.jobs and time.monotonic() < deadline:
            self.top_up(backlog=self.jobs)
        while time.monotonic() < deadline:
            try:
                with self.engine.begin() as conn:
                    # The tests check what happens, not how long the back-off waits.
                    conn.execute(text('UPDATE "WorkerJob" SET "availableAt" = now() '
                                      "WHERE status = 'PENDING' AND \"availableAt\" > now()"))
                    left = conn.execute(text(
                        f"""SELECT count(*) FROM "WorkerJob" AS j
                            WHERE status IN ('PENDING', 'PROCESSING') AND NOT {WAITING}""")).scalar()
            except Exception as exc:  # noqa: BLE001 - the server may still be coming back
                print(f"  (drain: {exc.__class__.__name__})")
                left = 1
            if not left:
                break
            time.sleep(0.5)
        for pool in self.pools:
            pool.send_signal(signal.SIGTERM)
        self.codes = [pool.wait(60) for pool in self.pools]

    def check(self) -> bool:
        assert self.engine is not None
        with self.engine.begin() as conn:
            statuses = dict(conn.execute(text(
                'SELECT status::text, count(*) FROM "WorkerJob" GROUP BY 1')).fetchall())
            completed_twice = conn.execute(text(
                """SELECT count(*) FROM (SELECT job_id FROM chaos_transitions
                   WHERE new_status = 'COMPLETED' GROUP BY job_id HAVING count(*) > 1) d""")).scalar()
            runs_twice = conn.execute(text(
                """SELECT count(*) FROM (SELECT job_id FROM pool_test_runs GROUP BY job_id
                   HAVING count(*) > 1) d""")).scalar()
            unrecorded = conn.execute(text(
                """SELECT count(*) FROM "WorkerJob" j WHERE status = 'COMPLETED'
                   AND NOT coalesce((j.payload->>'quiet')::boolean, false) AND NOT EXISTS
                   (SELECT 1 FROM pool_test_runs r WHERE r.job_id = j.id)""")).scalar()
            silent_dead = conn.execute(text(
                """SELECT count(*) FROM "WorkerJob" WHERE status = 'DEAD_LETTER'
                   AND "lastError" IS NULL""")).scalar()
            rescued = conn.execute(text(
                """SELECT count(*) FROM chaos_transitions WHERE old_status = 'PROCESSING'
                   AND new_status <> 'COMPLETED'""")).scalar()
            graph = self.check_graph(conn)
            flows = [flow.check(self, conn) for flow in _flows()]
            flow_held = sum(flow.held(conn) for flow in _flows())
        overlaps = self.overlaps()
        time.sleep(1)  # the pools' children were reaped by their masters; anything else lingers
        strays = _processes_with(f"SKIPLOCK_CHAOS_RUN={self.run_id}")
        print(f"seed {self.seed}: faults {dict(sorted(self.faults.items()))}")
        print(f"  jobs by status {statuses}; runs cut short and re-queued {rescued}; "
              f"master exit codes {self.codes}")
        print(f"  overlapping runs {len(overlaps)}; completed twice {completed_twice}; "
              f"committed twice {runs_twice}; completed without a run {unrecorded}; "
              f"dead letters without lastError {silent_dead}; stray processes {len(strays)}")
        print(f"  workflows: {graph['edges']} edges, {graph['batches']} batches, "
              f"{graph['held']} held for a person, {graph['cancelled']} cancelled; started "
              f"before a parent ended {graph['early']}; stranded {graph['stranded']}; "
              f"counts off {graph['miscounted']}; callbacks not run once "
              f"{graph['callbacks_off']}")
        for _, line in flows:
            print(f"  {line}")
        for job_id, first, second in overlaps[:5]:
            print(f"  OVERLAP job {job_id}: run {first} and run {second}")
        graph_ok = not (graph["early"] or graph["stranded"] or graph["miscounted"]
                        or graph["callbacks_off"])
        unsettled = (statuses.get("PENDING", 0) - graph["held"] - flow_held
                     + statuses.get("PROCESSING", 0))
        ok = (all(flow_ok for flow_ok, _ in flows)
              and set(statuses) <= {"COMPLETED", "DEAD_LETTER", "FAILED", "PENDING"}
              and unsettled == 0 and graph_ok and not overlaps
              and not completed_twice and not runs_twice and not unrecorded and not silent_dead
              and not strays and all(code == 0 for code in self.codes))
        print("  OK: every invariant held" if ok else "  FAILED")
        return ok

    def check_graph(self, conn: Any) -> dict[str, int]:
        """The workflows' invariants (see the module's docstring)."""
        def one(statement: str) -> int:
            return int(conn.execute(text(statement)).scalar() or 0)

        return {
            "edges": one('SELECT count(*) FROM "WorkerJobDependency"'),
            "batches": one('SELECT count(*) FROM "WorkerBatch"'),
            "held": one(f"""SELECT count(*) FROM "WorkerJob" AS j
                            WHERE {WAITING} AND NOT {STRANDED}"""),
            "cancelled": one("""SELECT count(*) FROM "WorkerJob"
                                WHERE status = 'FAILED' AND "cancelledBy" LIKE 'parent %'"""),
            # A child's first start, before the end of one of its parents (or with a parent
            # that never ended).
            "early": one("""
                SELECT count(*) FROM "WorkerJobDependency" AS d
                JOIN LATERAL (SELECT min(at) AS at FROM chaos_transitions
                              WHERE job_id = d.child AND new_status = 'PROCESSING') AS c
                  ON c.at IS NOT NULL
                WHERE NOT EXISTS (SELECT FROM chaos_transitions AS t
                                  WHERE t.job_id = d.parent AND t.at <= c.at
                                    AND t.new_status IN ('COMPLETED', 'DEAD_LETTER', 'FAILED'))
            """),
            "stranded": one(f'SELECT count(*) FROM "WorkerJob" AS j WHERE {STRANDED}'),
            "miscounted": one(f"""
                SELECT count(*) FROM "WorkerJob" AS j
                WHERE j.status = 'PENDING' AND NOT j."heldBack"
                  AND j."waitingFor" <> (SELECT count(*) FROM "WorkerJobDependency" AS d
                                         WHERE d.child = j.id AND d."resolvedAt" IS NULL)
                      -- a job of a sequence also waits for its turn
                      + {IN_LINE}::int
            """),
            # A batch whose callback did not complete exactly once, or whose counts miss
            # a member.
            "callbacks_off": one("""
                SELECT count(*) FROM "WorkerBatch" AS b
                WHERE (SELECT count(*) FROM chaos_transitions
                       WHERE job_id = b."callbackId" AND new_status = 'COMPLETED') <> 1
                   OR (b.counts ->> 'total')::int IS DISTINCT FROM b.total
                   OR (b.counts ->> 'completed')::int + (b.counts ->> 'deadLettered')::int
                      + (b.counts ->> 'cancelled')::int <> b.total
            """),
        }

    def overlaps(self) -> list[tuple[str, str, str]]:
        """(job, run, run) for each pair of runs of one job whose traces interleave."""
        spans: dict[str, dict[str, list[float]]] = collections.defaultdict(dict)
        if self.effects.exists():
            for line in self.effects.read_text().splitlines():
                job_id, token, at = line.split()
                span = spans[job_id].setdefault(token, [float(at), float(at)])
                span[0], span[1] = min(span[0], float(at)), max(span[1], float(at))
        found = []
        for job_id, runs in spans.items():
            ordered = sorted(runs.items(), key=lambda item: item[1][0])
            for (first, a), (second, b) in zip(ordered, ordered[1:], strict=False):
                if b[0] < a[1]:
                    found.append((job_id, first, second))
        return found

    def teardown(self) -> None:
        for pool in self.pools:
            if pool.poll() is None:
                os.killpg(pool.pid, signal.SIGKILL)
                pool.wait()
        for proxy in self.proxies:
            proxy.close()
        if self.engine is not None:
            self.engine.dispose()
        if self.cluster.is_running():
            self.stop_cluster()
        shutil.rmtree(self.base, ignore_errors=True)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per seed (default 200)")
    parser.add_argument("--seconds", type=float, default=60, help="faults per seed, in seconds")
    parser.add_argument("--pools", type=int, default=3, help="pools (default 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="random seeds, one soak each (default 1 2 3)")
    parser.add_argument("--faults", nargs="+", default=[], metavar="NAME",
                        help="only these faults: kill-child kill-master terminate-backends "
                             "read-only restart row-lock table-lock partition hang "
                             "cancel-parent")
    parser.add_argument("--keep", action="store_true", help="keep the logs of a failed seed")
    args = parser.parse_args(argv)
    failed = []
    for seed in args.seeds:
        soak = Soak(seed, args.jobs, args.seconds, args.pools, args.faults)
        ok = False
        try:
            soak.setup()
            soak.chaos()
            soak.drain()
            ok = soak.check()
        finally:
            if not ok and args.keep:
                kept = Path(tempfile.mkdtemp(prefix=f"skiplock-chaos-failed-{seed}-"))
                for log in soak.base.glob("*.log"):
                    shutil.copy(log, kept)
                print(f"  logs kept in {kept}")
            soak.teardown()
        if not ok:
            failed.append(seed)
    if failed:
        print(f"FAILED seeds: {failed}")
        raise SystemExit(1)
