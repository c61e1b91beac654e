"""The master keeps the leases of its children's jobs, one job at a time.

docs/lessons.md: send heartbeats from a place a busy handler cannot block; a
pure-Python loop holding the GIL, or C code that never releases it, starves a
heartbeat thread in the same process. The master is that place: one statement
every `--heartbeat` seconds refreshes `"lockedAt"` of the jobs its children
hold, each fenced by its own lockedBy and attempt, skipping (not waiting for)
rows another session has locked. Per job it then knows one of four things:
renewed, fresh (still ours, left as it was: below), busy (still ours, retried
soon), or gone (the master stops the child). Of a busy job it also asks which
session holds the row (`sql.ROW_LOCKERS`, only when some row was busy), so
that a lease given up for a row lock says so, and names the locker, rather
than blame the database (`lock_reason`).

It also knows, per job, the latest moment at which the database can have
dated the lease: the instant the renewing statement (or the child's claim) was
sent. The lease runs out `--stuck-timeout` after that by the database's clock;
the master stops the job `margin_s` earlier (self-fencing, docs/reliability.md).

The same statement carries the progress and the checkpoints the handlers
reported since the last beat, and answers which jobs an operator asked to
cancel (`cancel_requested`, read by the master after each beat;
pool/cancelling.py).

A lease dated less than `fresh_s` ago is read by the beat but not rewritten
(`needs_renewal`). Each renewal is a new version of the job's row and of its
index entries ("lockedAt" is indexed): a pool of short jobs claimed in batches
of half a second would otherwise rewrite, at every beat, nearly every job it
holds, most of them claimed a moment before and done a moment after (with
CPU-bound jobs, an extra row version for a good part of the jobs run:
docs/benchmarks.md, "Figures behind the code"). `fresh_s` is at most half an
interval, so a lease is renewed at most half an interval later than it would
have been (against a stuck timeout of at least three intervals), and a lease
is skipped only where two whole intervals remain before the master's own fence
(`fence_at`): with the tightest settings nothing is skipped. Progress and
checkpoints to write are always written.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import exc as sa_exc

from skiplock.queue_core import sql
from skiplock.queue_core.database import db
from skiplock.queue_core.database.arrays import text_array
from skiplock.queue_core.errors import SkiplockError
from skiplock.queue_core.jobs import JobRef, Progress
from skiplock.queue_core.lifecycle import Renewal, renew_leases

BUSY_RETRY_S = 1.0  # a lease that met a locked row is tried again this soon


def fence_margin_s(lease_s: float) -> float:
    """How long before its lease runs out a job is stopped (docs/reliability.md)."""
    return min(2.0, lease_s / 3)


def database_budget_s(lease_s: float) -> float:
    """The longest the master's loop spends on the database in one turn: half the
    margin, so that it is never late to a fence deadline by more than that."""
    return fence_margin_s(lease_s) / 2


class Heartbeats:
    def __init__(self, interval_s: float, lease_s: float) -> None:
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.margin_s = fence_margin_s(lease_s)
        self.fresh_s = max(0.0, min(interval_s / 2, lease_s - self.margin_s - 2 * interval_s))
        self.next_at = 0.0
        self.renewed: dict[str, float] = {}  # job id -> when its lease was last dated, at the latest
        self.last_success: float | None = None  # when the last round that reached the database began
        self.cancel_requested: frozenset[str] = frozenset()
        self.progress: dict[str, Progress] = {}  # reported since the last beat, by job id
        self.checkpoints: dict[str, str] = {}  # the same, of `skiplock.checkpoint`
        # Held jobs whose row the last beat found locked by another session: its pid,
        # when known.
        self.blocked: dict[str, int | None] = {}

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def soon(self) -> None:
        """Beat at the next turn (after an outage, before recovery may judge our jobs)."""
        self.next_at = 0.0

    def hold(self, job_id: str, dated_by: float) -> None:
        """A lease the master now keeps; `dated_by`: the claim was sent no later than this."""
        if job_id not in self.renewed:
            self.renewed[job_id] = dated_by

    def forget(self, job_id: str) -> None:
        self.renewed.pop(job_id, None)
        self.blocked.pop(job_id, None)

    def lock_reason(self, job_id: str, verb: str = "is") -> str | None:
        """Why the job's lease was not renewed when the database answered the last beat:
        another session holds its row. None when that is not what kept it."""
        if job_id not in self.blocked:
            return None
        pid = self.blocked[job_id]
        return f"its row {verb} locked by another session" + (f" (pid {pid})" if pid else "")

    def fence_at(self, job_id: str) -> float | None:
        """When the job must be stopped if its lease is not renewed before."""
        renewed = self.renewed.get(job_id)
        return None if renewed is None else renewed + self.lease_s - self.margin_s

    def needs_renewal(self, job_id: str, now: float) -> bool:
        """Whether the beat at `now` writes the job's lease (see the module's doc)."""
        renewed = self.renewed.get(job_id)
        return (renewed is None or now - renewed >= self.fresh_s or job_id in self.progress
                or job_id in self.checkpoints)

    def beat(self, refs: Iterable[JobRef], now: float) -> Renewal:
        """Renew every lease that needs it, and learn which jobs are still held (or, with
        none, check that the database answers); raises DatabaseUnavailable (the caller
        backs off)."""
        refs = list(refs)
        if refs:
            renewal = renew_leases(refs, self.progress,
                                   write=[self.needs_renewal(r.id, now) for r in refs],
                                   checkpoints=self.checkpoints)
            # A busy row was not written: keep its progress for the next beat.
            self.progress = {k: v for k, v in self.progress.items() if k in renewal.busy}
            if self.checkpoints:
                self.checkpoints = {k: v for k, v in self.checkpoints.items()
                                    if k in renewal.busy}
            self.note_blocked(renewal)
        else:
            with db.connect(autocommit=True) as conn:
                conn.execute(sql.PROBE)
            renewal = Renewal(frozenset(), frozenset(), frozenset())
        self.cancel_requested = renewal.cancel_requested
        for job_id in renewal.renewed:
            if job_id in self.renewed:
                self.renewed[job_id] = max(self.renewed[job_id], now)
        self.last_success = now
        wait = min(self.interval_s, BUSY_RETRY_S) if renewal.busy else self.interval_s
        self.next_at = now + wait
        return renewal

    def note_blocked(self, renewal: Renewal) -> None:
        for job_id in renewal.renewed | renewal.fresh | renewal.gone:
            self.blocked.pop(job_id, None)
        if not renewal.busy:
            return
        try:
            with db.connect(autocommit=True) as conn:
                lockers: dict[str, int | None] | None = {
                    r.id: r.pid for r in conn.execute(
                        sql.ROW_LOCKERS, {"ids": text_array(sorted(renewal.busy))})}
        except (SkiplockError, sa_exc.DBAPIError):
            lockers = None  # only a name for a log line: the beat itself went through
        for job_id in renewal.busy:
            self.blocked[job_id] = (self.blocked.get(job_id) if lockers is None
                                    else lockers.get(job_id))
