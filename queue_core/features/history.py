"""History: finished jobs leave the live part of "WorkerJob" for partitions by time
(migration 0022_history), and retention drops whole partitions.

The mover. A pass moves, in batches of `MOVE_BATCH`, each its own short transaction,
the COMPLETED and FAILED (cancelled) jobs finished `skiplock.history_after` ago (60 s
by default: `wait()`, results and the dashboard's recent jobs find them live), and the
dead letters finished `skiplock.history_dead_after` ago (7 days: a person sees and
retries them; a retry still works from history). What it leaves live and why:
`sql.HISTORY_MOVE`. The move of a row is a DELETE from the live part (its DELETE
triggers fire, as for cleanup's DELETE of the same rows) and an INSERT into history.

Why a mover and not the completion itself (`"archivedAt" = now()` in the completing
UPDATE): an UPDATE that moves a row to another partition is a DELETE and an INSERT, and
PostgreSQL fires no AFTER UPDATE row trigger for it. The end of a job is what those
triggers exist for: `WorkerJob_notify_done` (a `wait()`), `WorkerJob_parent_ended` (a
dependent let go), `WorkerJob_sequence_moved`, the slots' and rates' updates; moved at
completion, dependents would wait forever and waiters would fall back to polling. The
mover moves rows whose end those triggers have already handled. It also keeps the
recent jobs, which `wait()`, results and the dashboard read most, in the small part.
Measured both ways (`python -m bench history`, docs/benchmarks.md): on no-op jobs
without features, where none of those triggers has work, moving at completion was the
faster of the two (the row leaves the hot table at once); the mover cost the pool
nothing measurable.

The mover runs in every pool master (every `EVERY_S`, and again at once after a full
batch), in `skiplock cleanup`, and as `skiplock history move`. One mover at a time:
the others find the advisory lock taken and move nothing.

An operator's command that meets a row while a mover moves it (a retry of a dead
letter that is being archived) fails with SQLSTATE 40001, "tuple to be locked was
already moved to another partition due to concurrent update": `retry_dead` and the
dashboard's actions and cleanup's batches run it again (`again_if_moved`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from skiplock.queue_core import pacing, sql
from skiplock.queue_core.database import faults
from skiplock.queue_core.database.db import connect

log = logging.getLogger("skiplock.history")

MOVE_BATCH = 5000
EVERY_S = 5.0  # a master's pass
HEAD_EVERY_S = 60.0  # a master's pass from the finished index's head (MoveCursor)
AHEAD = 3  # partitions made ahead of now, counted in widths
DETACH_WAIT_S = 5.0  # how long a detach waits for older transactions (`_detach`)
MOVED_SQLSTATE = "40001"
_MOVED_MESSAGE = "already moved to another partition"
# A statement that meets a moved row again on its next run (it walks many rows while
# a mover moves thousands a second) gets this many runs in all.
MOVED_TRIES = 3

T = TypeVar("T")


@dataclass
class Settings:
    after_s: float
    dead_after_s: float
    width_s: float


def settings(conn: Connection | None = None) -> Settings:
    with connect(conn, autocommit=True) as c:
        row = c.execute(sql.HISTORY_SETTINGS).one()
    return Settings(float(row.after_s), float(row.dead_after_s), float(row.width_s))


def ensure_partitions(ahead: int = 1, conn: Connection | None = None) -> list[str]:
    """The partitions for now and the next `ahead` widths; the names of those made.
    Its own transaction: the ATTACH locks the new table until it commits."""
    with connect(conn, autocommit=True) as c:
        return [row.made for row in c.execute(sql.HISTORY_ENSURE, {"ahead": ahead})]


def move(after_s: float | None = None, dead_after_s: float | None = None, *,
         batch: int = MOVE_BATCH, limit: int | None = None,
         progress: Callable[[int], None] | None = None,
         starts: dict[str, datetime] | None = None) -> int:
    """Move finished jobs to history (see the module); `after_s` and `dead_after_s` override
    the settings. Stops after `limit` batches of each status (None: until none is left).
    Returns how many jobs moved; `progress` hears each batch's count.

    Each status's walk of the finished index starts at `starts[status]` (a master's
    cursor, `MoveCursor`), else at its head, and each batch after the first at the
    last row the batch before moved; `starts` hears where the next walk is to start.
    A row left behind a start (it was locked, or not yet movable) is moved by a walk
    from the head."""
    if after_s is None or dead_after_s is None:
        found = settings()
        after_s = found.after_s if after_s is None else after_s
        dead_after_s = found.dead_after_s if dead_after_s is None else dead_after_s
    ensure_partitions()
    total = 0
    for status, older_than_s in (("COMPLETED", after_s), ("FAILED", after_s),
                                 ("DEAD_LETTER", dead_after_s)):
        start = starts.get(status) if starts is not None else None
        batches = 0
        while limit is None or batches < limit:
            with connect(autocommit=True) as c:
                row = c.execute(sql.HISTORY_MOVE, {
                    "status": status, "older_than_s": float(older_than_s), "batch": batch,
                    "from_at": "-infinity" if start is None else start}).one()
            moved = int(row.n)
            batches += 1
            total += moved
            if row.last is not None:
                start = row.last
                if starts is not None:
                    starts[status] = row.last
            if progress is not None and moved:
                progress(moved)
            if moved < batch:
                break
    if total:
        log.info("moved %d finished jobs to history", total, extra={"archived": total})
    return total


@dataclass
class MoveCursor:
    """Where a master's passes of the mover start in the finished index.

    A pass walks the index from the head only every `every_s`, or less often when the
    walk is slow (queue_core/pacing.py): behind a held snapshot the head keeps an entry
    for every job moved since, and a pass from it visits them all, a walk that grows
    with every job run (250 ms after two minutes at 4,000 jobs/s). The other passes
    start at the last row moved of each status: what was finished later. The walk from
    the head picks up what those leave behind: a row locked when its turn came, a job
    whose unique window or dependents kept it live, a job finished by a transaction
    that committed after the rows it precedes had moved."""
    every_s: float = HEAD_EVERY_S
    starts: dict[str, datetime] = field(default_factory=dict)
    head_at: float = 0.0  # monotonic: when the next pass starts at the head

    def pass_starts(self, now: float) -> tuple[dict[str, datetime], bool]:
        """The starts for a pass beginning `now`, and whether it is a pass from the head."""
        if now >= self.head_at:
            return {}, True
        return self.starts, False

    def passed(self, starts: dict[str, datetime], now: float, took_s: float,
               from_head: bool) -> None:
        self.starts.update(starts)
        if from_head:
            self.head_at = now + pacing.delay(self.every_s, took_s)


def movable(after_s: float, dead_after_s: float) -> int:
    """How many jobs `move` would take now (read, not locked)."""
    with connect(autocommit=True) as c:
        return int(c.execute(sql.HISTORY_MOVABLE, {"after_s": after_s,
                                                   "dead_s": dead_after_s}).scalar_one())


@dataclass
class Partition:
    name: str
    lower: datetime
    upper: datetime
    detaching: bool = False


def partitions(conn: Connection | None = None) -> list[Partition]:
    with connect(conn, autocommit=True) as c:
        return [Partition(r.name, r.lower, r.upper, bool(r.detaching))
                for r in c.execute(sql.HISTORY_PARTITIONS)]


@dataclass
class Retention:
    """What `drop_older` did."""

    dropped: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)
    kept_dead: list[str] = field(default_factory=list)  # old enough, but with dead letters
    # Detached, not dropped yet: an older transaction could still read them (see below).
    waiting: list[str] = field(default_factory=list)
    rows: int = 0  # in the dropped partitions, as the planner counts them
    edges: int = 0  # dependency edges and batches of the dropped jobs, forgotten


def drop_older(older_than: timedelta, *, ahead: int = AHEAD,
               keep_dead: bool = False) -> Retention:
    """Detach (CONCURRENTLY: no lock that blocks readers or writers) and drop every
    partition whose upper bound is `older_than` ago or more; finish a detach that a
    crash left half done; make the partitions `ahead` widths ahead; ANALYZE the
    history (autovacuum never analyzes a partitioned table: the planner's figures for
    "WorkerJobHistory" come only from here)."""
    done = Retention()
    with connect(autocommit=True) as c:
        for row in c.execute(sql.HISTORY_DETACHING).fetchall():
            if _detach(c, row.name, "FINALIZE", done):
                done.finalized.append(row.name)
        now = c.exec_driver_sql("SELECT now()").scalar_one()
        for part in partitions(c):
            if part.detaching or part.upper > now - older_than:
                continue
            if keep_dead and c.exec_driver_sql(sql.HISTORY_HAS_DEAD.format(part.name)).scalar():
                done.kept_dead.append(part.name)
                continue
            rows = int(c.execute(sql.HISTORY_ROWS, {"name": part.name}).scalar_one())
            # Outside any transaction block: DETACH ... CONCURRENTLY is two transactions.
            if _detach(c, part.name, "CONCURRENTLY", done):
                done.rows += rows
                done.dropped.append(part.name)
        if done.dropped or done.finalized:
            forgot = c.execute(sql.FORGET_DROPPED_EDGES).one()
            done.edges = int(forgot.edges) + int(forgot.batches)
        done.made = ensure_partitions(ahead, c)
        c.exec_driver_sql('ANALYZE "WorkerJobHistory"')
    if done.dropped or done.finalized:
        log.info("dropped %d history partitions older than %s",
                 len(done.dropped) + len(done.finalized), older_than)
    return done


def _detach(c: Connection, name: str, how: str, done: Retention) -> bool:
    """Detach the partition `name` (`how`: CONCURRENTLY, or FINALIZE for one a detach
    left pending) and drop it; False: it waits for older transactions, for the next
    cleanup.

    The detach's second step waits for every transaction that could still read the
    partition: a long one (a report, a session idle in a transaction, the benchmark's
    held snapshot) held cleanup there for as long as it lasted, with the rest of
    cleanup undone. It waits DETACH_WAIT_S at most (lock_timeout); the partition is
    then left detach-pending, which readers that begin later no longer see, and the
    next cleanup finishes it (FINALIZE)."""
    c.exec_driver_sql(f"SET lock_timeout = '{int(DETACH_WAIT_S * 1000)}ms'")
    try:
        c.exec_driver_sql(f'ALTER TABLE "WorkerJobHistory" DETACH PARTITION "{name}" {how}')
    except sa_exc.DBAPIError as exc:
        if faults.classify(exc) != faults.Fault.LOCK_TIMEOUT:
            raise
        older = c.execute(sql.HISTORY_DETACH_WAITS_FOR, {"name": name}).first()
        who = (f"pid {older.pid} ({older.state}), open {older.age_s:.0f} s"
               if older is not None else "an older transaction")
        log.warning("history partition %s is detached but not dropped yet: it waits for %s; "
                    "the next cleanup drops it", name, who)
        done.waiting.append(name)
        return False
    finally:
        c.exec_driver_sql("RESET lock_timeout")
    c.exec_driver_sql(f'DROP TABLE "{name}"')
    return True


def is_moved(exc: BaseException) -> bool:
    """The error of a row a mover moved while this statement waited for it."""
    orig = getattr(exc, "orig", None)
    return (isinstance(exc, sa_exc.DBAPIError)
            and getattr(orig, "pgcode", None) == MOVED_SQLSTATE
            and _MOVED_MESSAGE in str(orig))


def again_if_moved(work: Callable[[], T], *, tries: int = MOVED_TRIES) -> T:
    """`work`, run again (up to `tries` in all) while a mover moved one of its rows under
    it (40001). Each run takes a new snapshot, in which the moved row is history."""
    for _ in range(tries - 1):
        try:
            return work()
        except sa_exc.DBAPIError as exc:
            if not is_moved(exc):
                raise
            log.info("a job moved to history under a change: trying it again")
    return work()


def describe(done: Retention) -> list[str]:
    lines = [f"dropped history partition {n}" for n in done.dropped]
    lines += [f"finished the detach of history partition {n}" for n in done.finalized]
    lines += [f"made history partition {n}" for n in done.made]
    lines += [f"kept history partition {n}: it holds dead letters" for n in done.kept_dead]
    lines += [f"detached history partition {n}: an older transaction could still read it; "
              "the next cleanup drops it" for n in done.waiting]
    return lines
