"""What `skiplock stats` shows: the queue and the health of its table, fast on any size.

Counting a table of tens of millions of rows takes seconds (docs/lessons.md
"count(*) on a big job table is slow"), so only what the partial indexes make
cheap is counted exactly: PENDING and PROCESSING (small while the queue keeps
up), dead letters (few, or someone should look), jobs finished in the last
minutes (a range of the finished index). COMPLETED is what the planner's
estimate of the whole table leaves over, and says so (`estimated`). `exact=True`
counts everything, for small tables and the curious.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from skiplock.ops import sql as ops_sql
from skiplock.ops.pauses import paused
from skiplock.ops.processes import live_served
from skiplock.queue_core import sql
from skiplock.queue_core.config import cached_settings
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.features import why
from skiplock.queue_core.features.aging import aged_by_type
from skiplock.queue_core.features.debounce import debounced_by_type
from skiplock.queue_core.features.fairness import fair_keys
from skiplock.queue_core.features.parking import parked_by_type
from skiplock.queue_core.features.sequences import held_sequences
from skiplock.queue_core.maintenance import camel, pending_breakdown

THROUGHPUT_WINDOWS_MIN = (1, 5, 15)


@dataclass
class TableHealth:
    total_bytes: int = 0
    table_bytes: int = 0
    index_bytes: int = 0
    live_tuples: int = 0
    dead_tuples: int = 0
    last_autovacuum: datetime | None = None
    last_vacuum: datetime | None = None
    last_autoanalyze: datetime | None = None
    # The oldest open transaction (or prepared transaction, or replication
    # slot) that keeps vacuum from removing dead rows.
    horizon_holder: str | None = None
    horizon_age_s: float | None = None
    horizon_xid_age: int | None = None


@dataclass
class Health:
    counts: dict[str, int] = field(default_factory=dict)
    estimated: list[str] = field(default_factory=list)  # statuses whose count is an estimate
    ready: int = 0
    scheduled: int = 0
    oldest_ready_age_s: float | None = None
    pending_by_type: dict[str, int] = field(default_factory=dict)
    ready_by_type: dict[str, int] = field(default_factory=dict)
    processing_by_type: dict[str, int] = field(default_factory=dict)
    dead_by_type: dict[str, int] = field(default_factory=dict)
    completed_per_window: dict[int, int] = field(default_factory=dict)  # minutes -> jobs
    dead_per_window: dict[int, int] = field(default_factory=dict)
    paused: dict[str, int] = field(default_factory=dict)  # type -> pending jobs held
    held_back: int = 0  # pending jobs waiting for a slot of their concurrency key
    held_back_by_key: dict[str, int] = field(default_factory=dict)  # the 10 biggest keys
    # Sequences (queue_core/features/sequences.py): keys with jobs in line, jobs waiting
    # for their turn, and the keys held by a dead-lettered job (the 10 with most waiting:
    # key -> (its dead letter's id, jobs waiting behind it)).
    sequences: int = 0
    sequence_waiting: int = 0
    sequences_held: int = 0
    held_sequences: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    # Fairness (queue_core/features/fairness.py): pending jobs waiting their key's turn,
    # and the 10 keys with the most waiting (weight, window, in the queue, waiting).
    fair_waiting: int = 0
    fair_keys: dict[str, dict[str, int]] = field(default_factory=dict)
    # Rate limits (queue_core/features/rates.py): pending jobs waiting for their key's
    # window, and the 10 keys with most of them (rate, waiting, let in, next start).
    rate_waiting: int = 0
    rate_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Routing (pool/served.py): the live pools (masters), how many of them serve
    # each type that has jobs, and the pending jobs of types none of them serves,
    # which wait for one (parked: taken out of the claim's index meanwhile).
    pools: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    unserved: dict[str, int] = field(default_factory=dict)  # type -> pending jobs
    parked: int = 0
    parked_by_type: dict[str, int] = field(default_factory=dict)
    # Pending jobs not claimable now, by reason (queue_core/features/why.py).
    held_by_reason: dict[str, int] = field(default_factory=dict)
    # Debounce (queue_core/features/debounce.py): pending jobs that have a debounce key,
    # how many of them are not due yet, and how many enqueues were folded into them.
    debounced: int = 0
    debounced_not_due: int = 0
    debounce_moves: int = 0
    debounced_by_type: dict[str, int] = field(default_factory=dict)
    # Priority aging (queue_core/features/aging.py): pending jobs it raised, by type.
    aged: int = 0
    aged_by_type: dict[str, int] = field(default_factory=dict)
    table: TableHealth = field(default_factory=TableHealth)

    def held_labelled(self) -> list[tuple[str, int]]:
        """The reasons pending jobs are not claimable now, in words, with their counts."""
        labels = why.labels()
        return [(labels.get(name, name), n) for name, n in self.held_by_reason.items() if n]

    def to_dict(self) -> dict[str, Any]:
        """camelCase, with the original service's QueueStats keys (pending, deadLetter, byType) on top."""
        t = self.table
        return {
            "pending": self.counts.get("PENDING", 0),
            "processing": self.counts.get("PROCESSING", 0),
            "completed": self.counts.get("COMPLETED", 0),
            "failed": self.counts.get("FAILED", 0),
            "deadLetter": self.counts.get("DEAD_LETTER", 0),
            "estimated": [camel(s) for s in self.estimated],
            "ready": self.ready,
            "scheduled": self.scheduled,
            "oldestReadyAgeSeconds": self.oldest_ready_age_s,
            "byType": self.pending_by_type,
            "readyByType": self.ready_by_type,
            "processingByType": self.processing_by_type,
            "deadLetterByType": self.dead_by_type,
            "completedLastMinutes": {str(m): n for m, n in self.completed_per_window.items()},
            "deadLetteredLastMinutes": {str(m): n for m, n in self.dead_per_window.items()},
            "throughputPerSecond": {str(m): round(n / (60 * m), 3)
                                    for m, n in self.completed_per_window.items()},
            "paused": self.paused,
            "heldBack": self.held_back,
            "heldBackByKey": self.held_back_by_key,
            "sequences": {"keys": self.sequences, "waiting": self.sequence_waiting,
                          "held": self.sequences_held,
                          "heldKeys": {k: {"deadLetter": head, "waiting": n}
                                       for k, (head, n) in self.held_sequences.items()}},
            "fairWaiting": self.fair_waiting,
            "fairKeys": self.fair_keys,
            "rateWaiting": self.rate_waiting,
            "rateLimitedKeys": self.rate_keys,
            "pools": self.pools,
            "servedBy": self.served_by,
            "unserved": self.unserved,
            "parked": self.parked,
            "parkedByType": self.parked_by_type,
            "heldByReason": self.held_by_reason,
            "debounced": self.debounced,
            "debouncedNotDue": self.debounced_not_due,
            "debounceMoves": self.debounce_moves,
            "debouncedByType": self.debounced_by_type,
            "aged": self.aged,
            "agedByType": self.aged_by_type,
            "table": {
                "totalBytes": t.total_bytes, "tableBytes": t.table_bytes,
                "indexBytes": t.index_bytes, "liveTuples": t.live_tuples,
                "deadTuples": t.dead_tuples,
                "lastAutovacuum": t.last_autovacuum.isoformat() if t.last_autovacuum else None,
                "lastVacuum": t.last_vacuum.isoformat() if t.last_vacuum else None,
                "lastAutoanalyze": t.last_autoanalyze.isoformat() if t.last_autoanalyze else None,
                "vacuumHorizonHolder": t.horizon_holder,
                "vacuumHorizonAgeSeconds": t.horizon_age_s,
                "vacuumHorizonXidAge": t.horizon_xid_age,
            },
        }


def dead_by_type(conn: Connection | Session | None = None) -> dict[str, int]:
    """Dead letters by job type, through the DEAD_LETTER partial index."""
    with connect(conn) as c:
        return {r.type: int(r.n) for r in c.execute(ops_sql.DEAD_BY_TYPE)}


def routing(health: Health, live: list[frozenset[str] | None],
            parked: dict[str, int]) -> None:
    """Fill in who serves what: `live` are the served sets of the live masters (None: an
    older skiplock's, which serves every type), `parked` the parked jobs by type."""
    health.pools = len(live)
    health.parked_by_type = parked
    health.parked = sum(parked.values())
    types = set(health.pending_by_type) | set(health.processing_by_type) | set(parked)
    every = sum(1 for served in live if served is None)
    for job_type in sorted(types):
        health.served_by[job_type] = every + sum(
            1 for served in live if served is not None and job_type in served)
        if not health.served_by[job_type] and health.pending_by_type.get(job_type):
            health.unserved[job_type] = health.pending_by_type[job_type]


def collect(exact: bool = False, conn: Connection | Session | None = None,
            live_s: float | None = None) -> Health:
    """The figures of `skiplock stats`; a pool is live while its heartbeat is younger
    than `live_s` (default: the stuck timeout, as `skiplock ps` judges)."""
    if live_s is None:
        live_s = cached_settings().effective_stuck_timeout_s
    health = Health()
    with connect(conn) as c:
        # The foundation's breakdown, without its full count by status (a scan).
        base = pending_breakdown(c)
        health.ready, health.scheduled = base.ready, base.scheduled
        health.oldest_ready_age_s = base.oldest_ready_age_s
        health.pending_by_type = base.by_type
        health.ready_by_type = base.ready_by_type
        health.processing_by_type = base.processing_by_type
        health.dead_by_type = dead_by_type(c)
        table = c.execute(ops_sql.TABLE_ESTIMATE).first()
        if exact:
            counts = {r.status: int(r.n) for r in c.execute(sql.COUNT_BY_STATUS)}
        else:
            # PENDING and PROCESSING are the sums of the breakdown just read
            # through their partial indexes; counting them again would double that.
            failed = int(c.execute(ops_sql.FAILED_COUNT).scalar_one())
            dead = sum(health.dead_by_type.values())
            counts = {"PENDING": sum(health.pending_by_type.values()),
                      "PROCESSING": sum(health.processing_by_type.values()),
                      "DEAD_LETTER": dead, "FAILED": failed}
            # reltuples is -1 before the first ANALYZE; n_live_tup is kept by
            # the statistics collector from the first insert.
            estimate = max(int(table.estimate), int(table.live or 0)) if table else 0
            counts["COMPLETED"] = max(0, estimate - sum(counts.values()))
            health.estimated = ["COMPLETED"]
        for status in ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "DEAD_LETTER"):
            health.counts[status] = counts.get(status, 0)
        for row in c.execute(ops_sql.THROUGHPUT, {"windows": list(THROUGHPUT_WINDOWS_MIN)}):
            health.completed_per_window[int(row.minutes)] = int(row.completed)
            health.dead_per_window[int(row.minutes)] = int(row.dead)
        if table:
            health.table = TableHealth(
                total_bytes=int(table.total_bytes), table_bytes=int(table.table_bytes),
                index_bytes=int(table.index_bytes), live_tuples=int(table.live or 0),
                dead_tuples=int(table.dead or 0), last_autovacuum=table.last_autovacuum,
                last_vacuum=table.last_vacuum, last_autoanalyze=table.last_autoanalyze)
        holder = c.execute(ops_sql.VACUUM_HORIZON).first()
        if holder is not None:
            what = f"{holder.holder} {holder.who}"
            if holder.application:
                what += f" ({holder.application})"
            if holder.state:
                what += f", {holder.state}"
            health.table.horizon_holder = what
            health.table.horizon_age_s = (float(holder.age_s) if holder.age_s is not None
                                          else None)
            health.table.horizon_xid_age = (int(holder.xid_age) if holder.xid_age is not None
                                            else None)
        health.paused = {p.type: p.pending for p in paused(c)}
        for index, held in enumerate(c.execute(ops_sql.HELD_BACK)):
            health.held_back += int(held.n)
            if index < 10:
                health.held_back_by_key[held.key] = int(held.n)
        line = c.execute(sql.SEQUENCE_COUNTS).one()
        health.sequences, health.sequence_waiting = int(line.keys), int(line.waiting)
        health.sequences_held = int(line.held)
        if health.sequences_held:
            health.held_sequences = {s.key: (s.head, s.waiting)
                                     for s in held_sequences(10, c)}
        health.fair_waiting = int(c.execute(sql.COUNT_WAITING_TURN).scalar_one())
        health.fair_keys = {k.key: {"weight": k.weight, "window": k.window,
                                    "queued": k.admitted, "waiting": k.waiting}
                            for k in fair_keys(10, c)}
        health.rate_waiting = int(c.execute(sql.RATE_WAITING).scalar_one())
        if health.rate_waiting:
            for key in c.execute(sql.RATE_KEYS, {"limit": 10}):
                health.rate_keys[key.key] = {
                    "rate": key.rate, "waiting": int(key.waiting), "letIn": int(key.let_in),
                    "nextAt": key.next_at.isoformat() if key.next_at else None}
        routing(health, live_served(live_s, c), parked_by_type(c))
        health.held_by_reason = why.count_held(c)
        for job_type, folded in debounced_by_type(c).items():
            health.debounced += folded.pending
            health.debounced_not_due += folded.not_due
            health.debounce_moves += folded.moves
            health.debounced_by_type[job_type] = folded.pending
        health.aged_by_type = {t: n for t, (n, _) in aged_by_type(c).items()}
        health.aged = sum(health.aged_by_type.values())
    return health
