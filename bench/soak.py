"""The many-hosts soak: pools on several hosts, one database, and single hosts cut off.

    python -m bench soak [--hosts 4] [--minutes 30] [--jobs 1000000] [--seed N]
    make soak            (4 hosts, 3 minutes, 20,000 jobs)

Each host is a network namespace of this machine (bench/netns.py: a veth
pair to a bridge, every address on 10.231.0.0/24) with a hostname of its own
and its own `skiplock worker` pool (3 children, heartbeat 1 s, stuck timeout
8 s). The database is a private embedded cluster, as in the chaos soak
(bench/chaos.py, whose `Soak` this one extends), listening on the bridge's
address too, with trust for that subnet only. Needs root; without network
namespaces it stops and says why (the chaos soak's `partition` fault, a
frozen proxy per pool, is the fallback there).

The jobs are mostly no-ops (SOAK_NOOP, at a lower priority), enqueued evenly
over the minutes (with `--flat-out`, kept 3,000 deep instead: the figures are
then each host's capacity), so that the figures are the queue's own; among
them, a few at a time, the chaos soak's CHAOS_WORK jobs, workflows and
flow-control workloads (its FLOWS), whose runs leave a trace in an effects
file on the machine, outside the database, and one in twelve of which
outlives a rescue: a run that was not stopped in time, or that committed
twice, shows there. Once every host has completed a job,
for `--minutes` (or until every job ended), faults chosen by the seed:

- a partition: one host's link taken down for 5 to 30 s (longer than the
  stuck timeout mostly, so that its jobs are rescued by the others and its
  own runs must be fenced before they can commit), then healed; one host at
  a time, with a few seconds of all hosts up between;
- SIGKILL of a child, every 3 to 10 s; SIGKILL of a master (restarted at once
  by the soak, the supervisor's role), every 15 to 40 s; a master that exits by
  itself is restarted too, and counted;
- an immediate restart of the database (crash recovery), 15 to 30 s in, then
  every 4 to 8 minutes.

Then the faults stop, the queue drains, the pools stop with TERM, and the
chaos soak's invariants are checked (no two runs of a job overlap, nothing
completed or committed twice, every job ends, every master exits 0, no stray
process; the workflows' invariants), and the completions per second of each
host in each phase (all hosts up; host N cut off; the 10 s from a database
restart) are printed, from the status transitions the database recorded
(the host is the first part of the holder's id, its hostname).

Clean-up always runs (Ctrl-C and TERM included): pools, cluster, namespaces,
links; and what a crashed run left is removed at the start. Exits 1 if an
invariant fails. Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import netns
from bench.chaos import WAITING, Soak, _flows
from skiplock.queue_core import enqueue_many
from skiplock.queue_core.database.embedded import PORT, find_bindir

BACKLOG = 3000  # no-ops kept waiting: every child always finds work
TICK_S = 0.25
RESTART_LABEL = "db restart (+10 s)"
ALL_UP = "all hosts up"


class HostsSoak(Soak):
    heartbeat = 1.0
    stuck = 8.0
    long_share = 1 / 12
    concurrency = 3
    log_level = "WARNING"  # a line per job would be a gigabyte of logs; fences are errors
    prefix = "skiplock-soak"

    def __init__(self, seed: int, jobs: int, seconds: float, hosts: int,
                 flat_out: bool = False) -> None:
        super().__init__(seed, jobs, seconds, hosts)
        self.flat_out = flat_out
        self.began: float | None = None  # monotonic, when the faults began
        self.hosts = netns.Hosts(hosts)
        self.listening = False
        self.phases: list[tuple[str, float]] = []  # (label, wall-clock start), in order
        self.ended = 0.0
        self.exits: list[tuple[int, int]] = []  # (host, code) of masters that exited alone
        self.pending = 0

    # -- set-up ----------------------------------------------------------------

    def setup(self) -> None:
        self.hosts.up()
        remove_stale_clusters(self.base)
        self.url = self.start_cluster()
        self.open_database()
        self.pools = [self.start(i) for i in range(self.npools)]
        self.warm_up()

    def warm_up(self) -> None:
        """Until every host has completed a job: pools start slowly on a busy machine, and
        the phases' figures should not count that."""
        assert self.engine is not None
        deadline = time.monotonic() + 180
        hosts = 0
        while time.monotonic() < deadline:
            self.top_up(BACKLOG)
            with self.engine.begin() as conn:
                hosts = int(conn.execute(text(
                    """SELECT count(DISTINCT split_part(locked_by, ':', 1)) FROM chaos_transitions
                       WHERE new_status = 'COMPLETED'""")).scalar() or 0)
            if hosts == self.npools:
                return
            time.sleep(TICK_S)
        raise RuntimeError(f"only {hosts} of {self.npools} hosts completed a job in 180 s")

    def start_cluster(self) -> str:
        """The embedded cluster, also on the bridge's address with trust for the hosts'
        subnet: settings of its own (postgresql.auto.conf and an hba file of the soak),
        which survive its restarts; the cluster's private files are left as they are."""
        url = self.url = self.cluster.ensure_running()
        if not self.listening:
            hba = self.base / "soak_hba.conf"
            hba.write_text("local all all peer map=skiplock\n"
                           f"host all all {netns.SERVER}/{netns.PREFIX_LEN} trust\n")
            hba.chmod(0o644)
            self.sql(f"ALTER SYSTEM SET listen_addresses = '{netns.SERVER}'", "postgres")
            self.sql(f"ALTER SYSTEM SET hba_file = '{hba}'", "postgres")
            bindir = find_bindir()
            assert bindir is not None
            self.cluster._pg_ctl(bindir, "restart", "restart the soak's cluster on TCP")
            self.listening = True
        return url

    def pool_url(self, index: int) -> str:
        return make_url(self.url).set(host=netns.SERVER, port=PORT, query={}).render_as_string(
            hide_password=False)

    def pool_command(self, index: int, argv: list[str]) -> list[str]:
        return self.hosts.command(index, argv)

    # -- the jobs --------------------------------------------------------------

    def top_up(self, backlog: int) -> None:
        """No-ops up to `backlog` waiting, and now and then an effect job or a workflow."""
        assert self.engine is not None
        made = 0
        try:
            with self.engine.begin() as conn:
                self.pending = int(conn.execute(text(
                    """SELECT count(*) FROM "WorkerJob" WHERE status = 'PENDING'""")).scalar()
                    or 0)
                n = min(max(0, backlog - self.pending), self.due() - self.enqueued)
                jobs: list[dict[str, Any]] = [
                    {"type": "SOAK_NOOP", "payload": {"quiet": True}, "priority": -1,
                     "max_attempts": 8} for _ in range(n)]
                if self.enqueued + n < self.jobs and self.job_rng.random() < 0.2:
                    jobs.append({"type": "CHAOS_WORK", "payload": self.payload(),
                                 "max_attempts": 8})
                if jobs:
                    enqueue_many(jobs, conn=conn)
                made = len(jobs)
                if self.enqueued + made < self.jobs and self.job_rng.random() < 0.02:
                    made += self.workflow(conn)
                for flow in _flows():  # the flow-control workloads, as rarely
                    if self.enqueued + made < self.jobs and self.job_rng.random() < 0.02:
                        made += flow.enqueue(self, conn)
        except Exception as exc:  # noqa: BLE001 - the database is having one of its faults
            print(f"  (top-up: {exc.__class__.__name__})")
            return
        self.enqueued += made

    def settled(self) -> bool:
        """Nothing left to run (a job held for a person waits by design)."""
        assert self.engine is not None
        try:
            with self.engine.begin() as conn:
                return not conn.execute(text(
                    f"""SELECT count(*) FROM "WorkerJob" AS j
                        WHERE status IN ('PENDING', 'PROCESSING') AND NOT {WAITING}""")).scalar()
        except Exception:  # noqa: BLE001 - the database is having one of its faults
            return False

    def due(self) -> int:
        """How many jobs should have been enqueued by now: all of them flat out, else as
        many as spread evenly over the minutes (a few to warm up)."""
        if self.flat_out:
            return self.jobs
        if self.began is None:
            return min(self.jobs, self.enqueued + 50)
        spent = (time.monotonic() - self.began) / self.seconds
        return min(self.jobs, int(self.jobs * spent) + 50)

    # -- the faults ------------------------------------------------------------

    def phase(self, label: str) -> None:
        if not self.phases or self.phases[-1][0] != label:
            self.phases.append((label, time.time()))

    def supervise(self) -> None:
        """Restart a master that exited by itself (as systemd's Restart=always would)."""
        for i, pool in enumerate(self.pools):
            code = pool.poll()
            if code is not None:
                self.exits.append((i, code))
                self.pools[i] = self.start(i)

    def chaos(self) -> None:
        rng = self.rng
        now = self.began = time.monotonic()
        stop_at = now + self.seconds
        cut: int | None = None
        heal_at = restarted_until = 0.0
        next_cut = now + rng.uniform(5, 15)
        next_child = now + rng.uniform(3, 10)
        next_master = now + rng.uniform(15, 40)
        next_restart = now + rng.uniform(15, 30)  # a short run has one too
        self.phase(ALL_UP)
        next_report = now + 60
        try:
            while now < stop_at and (self.enqueued < self.jobs or not self.settled()):
                self.top_up(BACKLOG)
                self.supervise()
                if cut is not None and now >= heal_at:
                    self.hosts.heal(cut)
                    cut, next_cut = None, now + rng.uniform(3, 15)
                elif cut is None and now >= restarted_until and now >= next_restart:
                    self.faults["restart"] += 1
                    self.phase(RESTART_LABEL)
                    self.guarded("restart", self.restart)
                    now = time.monotonic()
                    restarted_until, next_restart = now + 10, now + rng.uniform(240, 480)
                elif cut is None and now >= restarted_until and now >= next_cut:
                    cut, seconds = self.pick.randrange(self.npools), rng.uniform(5, 30)
                    self.faults["partition"] += 1
                    if seconds > self.stuck:
                        self.faults["partition past the stuck timeout"] += 1
                    self.hosts.cut(cut)
                    heal_at = now + seconds
                if now >= next_child:
                    self.faults["kill child"] += 1
                    self.kill_child()
                    next_child = now + rng.uniform(3, 10)
                if now >= next_master:
                    self.faults["kill master"] += 1
                    self.kill_master()
                    next_master = now + rng.uniform(15, 40)
                self.phase(f"host{cut} cut" if cut is not None
                           else RESTART_LABEL if now < restarted_until else ALL_UP)
                if now >= next_report:
                    print(f"  {now - self.began:.0f} s: {self.enqueued} enqueued, "
                          f"{self.pending} waiting; faults {dict(sorted(self.faults.items()))}",
                          flush=True)
                    next_report = now + 60
                time.sleep(TICK_S)
                now = time.monotonic()
        finally:
            if cut is not None:
                self.hosts.heal(cut)
            self.ended = time.time()
        print(f"  faults over after {self.seconds_run():.0f} s: {self.enqueued} jobs enqueued; "
              "draining")

    def guarded(self, name: str, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a fault on top of a fault
            print(f"  ({name}: {str(exc).strip().splitlines()[0]})")

    def seconds_run(self) -> float:
        return self.ended - self.phases[0][1] if self.phases else 0.0

    # -- the end ---------------------------------------------------------------

    def drain(self) -> None:
        self.jobs = self.enqueued  # what the faults' time did not enqueue is not owed
        super().drain()

    def check(self) -> bool:
        assert self.engine is not None
        with self.engine.begin() as conn:
            # The workflows' checks look transitions up by job: millions of rows here.
            conn.execute(text("CREATE INDEX ON chaos_transitions (job_id)"))
        self.throughput()
        with self.engine.begin() as conn:
            # Eight attempts cannot all be cut short: a no-op that did not complete failed.
            unfinished = int(conn.execute(text(
                """SELECT count(*) FROM "WorkerJob" WHERE type = 'SOAK_NOOP'
                   AND status <> 'COMPLETED'""")).scalar() or 0)
        print(f"  no-ops not COMPLETED: {unfinished}")
        fenced = sum(log.read_text(errors="replace").count("before another host may rescue")
                     for log in self.base.glob("pool-*.log"))
        print(f"  runs fenced by their own master (logged): {fenced}; masters that exited by "
              f"themselves (restarted): {self.exits or 'none'}")
        return super().check() and not unfinished

    def throughput(self) -> None:
        """Completions per second of each host in each kind of phase, from the database's
        record of every transition to COMPLETED (stamped when it committed)."""
        assert self.engine is not None
        with self.engine.begin() as conn:
            rows = conn.execute(text(
                """SELECT split_part(locked_by, ':', 1), floor(extract(epoch FROM at) * 10),
                          count(*)
                   FROM chaos_transitions WHERE new_status = 'COMPLETED'
                   GROUP BY 1, 2""")).fetchall()
            rescued: dict[str, int] = dict(conn.execute(text(
                """SELECT split_part(locked_by, ':', 1), count(*) FROM chaos_transitions
                   WHERE old_status = 'PROCESSING' AND new_status = 'PENDING'
                   GROUP BY 1""")).fetchall())
        starts = [at for _, at in self.phases]
        span: dict[str, float] = collections.defaultdict(float)
        for (label, at), end in zip(self.phases, [*starts[1:], self.ended], strict=True):
            span[label] += end - at
        done: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        before = after = 0
        for host, tenth, count in rows:
            at = (float(tenth) + 0.5) / 10
            i = bisect.bisect_right(starts, at) - 1
            if i < 0:
                before += int(count)  # the warm-up's
                continue
            if at >= self.ended:
                after += int(count)  # the drain's
                continue
            done[self.phases[i][0]][host] += int(count)
        names = [netns.hostname(i) for i in range(self.npools)]
        total_done = sum(sum(c.values()) for c in done.values())
        print(f"  completions during the faults: {total_done} in {self.seconds_run():.0f} s "
              f"({total_done / max(self.seconds_run(), 1e-9):.0f}/s); before them (the pools "
              f"starting): {before}; in the drain: {after}")
        print("  completions per second of each host, by phase "
              f"({', '.join(names)}; total):")
        order = [ALL_UP, *(f"host{i} cut" for i in range(self.npools)), RESTART_LABEL]
        for label in order:
            if span[label] <= 0:
                continue
            count = sum(1 for lab, _ in self.phases if lab == label)
            rates = [done[label][name] / span[label] for name in names]
            print(f"    {label:<20} {count:>3} x, {span[label]:>6.0f} s: "
                  + " ".join(f"{rate:>6.0f}" for rate in rates)
                  + f";  {sum(rates):>6.0f}")
        print("  runs cut short and re-queued, by holder's host: "
              + ", ".join(f"{host} {rescued.get(host, 0)}" for host in names))

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.hosts.down()


def remove_stale_clusters(keep: Path) -> None:
    """Stop the clusters of earlier soaks that crashed (one may hold the bridge's address
    and port) and remove their directories; the lock held says no soak runs now."""
    for base in Path("/tmp").glob(f"{HostsSoak.prefix}-*"):
        if base == keep or not base.is_dir():
            continue
        for pidfile in base.glob("**/postmaster.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    ours = str(pidfile.parent).encode() in cmdline.read()
            except (OSError, ValueError, IndexError):
                continue
            if ours:
                print(f"  stopping the cluster an earlier soak left in {pidfile.parent}")
                os.kill(pid, signal.SIGQUIT)  # an immediate shutdown
                deadline = time.monotonic() + 30
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=4, help="hosts (default 4)")
    parser.add_argument("--minutes", type=float, default=30,
                        help="faults for this long, or until every job ended (default 30)")
    parser.add_argument("--jobs", type=int, default=1_000_000,
                        help="jobs at most (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--flat-out", action="store_true",
                        help="enqueue as fast as the hosts run (a backlog of 3,000), not "
                             "spread over the minutes: the figures are then the capacity")
    parser.add_argument("--keep", action="store_true", help="keep the logs of a failed run")
    args = parser.parse_args(argv)
    if not 1 <= args.hosts <= 200:
        parser.error("--hosts: from 1 to 200")
    try:
        netns.check_available()
    except netns.NetnsUnavailable as exc:
        raise SystemExit(f"soak: {exc}; `python -m bench chaos --faults partition` cuts pools "
                         "off through proxies instead") from None
    except FileNotFoundError:
        raise SystemExit("soak: the `ip` command (iproute2) is missing") from None
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    soak = HostsSoak(args.seed, args.jobs, args.minutes * 60, args.hosts, args.flat_out)
    print(f"soak: {args.hosts} hosts, {args.minutes:g} min, {args.jobs} jobs at most "
          f"({'flat out' if args.flat_out else 'spread over the minutes'}), seed {args.seed}")
    ok = False
    try:
        try:
            soak.setup()
        except netns.NetnsUnavailable as exc:  # another soak runs
            raise SystemExit(f"soak: {exc}") from None
        soak.chaos()
        soak.drain()
        ok = soak.check()
    finally:
        if not ok and args.keep:
            kept = Path(tempfile.mkdtemp(prefix=f"skiplock-soak-failed-{args.seed}-",
                                         dir=os.environ.get("TMPDIR", "/var/tmp")))
            for log in soak.base.glob("*.log"):
                shutil.copy(log, kept)
            print(f"  logs kept in {kept}")
        soak.teardown()
    if not ok:
        raise SystemExit(1)

