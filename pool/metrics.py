"""Prometheus metrics, served by the master (`skiplock worker --metrics-port PORT`).

Children are separate processes, but every job start and end, and every
child exit, passes through the master's observer hooks: counting there gives
one consistent set of series per pool without prometheus' multiprocess mode
(and its directory of mmap files to clean). Queue depth comes from the
database every REFRESH_S, read in the master's loop (never in the scrape
thread, which must not touch a connection the loop uses).

Bound to 127.0.0.1 unless `--metrics-host` says otherwise: the metrics name
job types and hosts, which is nobody else's business.

    skiplock_jobs_started_total{type}          jobs a child of this pool began
    skiplock_jobs_completed_total{type}        ... that completed
    skiplock_jobs_failed_total{type}           ... that failed (retried + dead-lettered + lost)
    skiplock_jobs_retried_total{type}          ... that failed and will run again after a backoff
    skiplock_jobs_dead_lettered_total{type}    ... that failed for good (attempts used up, or no retry)
    skiplock_jobs_lost_total{type}             ... whose lease was lost (rescued, maybe run elsewhere)
    skiplock_jobs_snoozed_total{type}          ... that asked to run again later (no attempt spent)
    skiplock_worker_job_progress{worker,type}  the running job's last skiplock.progress (0-1)
    skiplock_job_duration_seconds{type}        histogram of run times, start to outcome
    skiplock_child_restarts_total{cause}       children replaced, by cause (recycled, crashed, ...)
    skiplock_pool_children                     children alive now
    skiplock_pool_busy_children                children running a job now
    skiplock_queue_jobs{status,type}           PENDING, PROCESSING and DEAD_LETTER jobs in the whole queue
    skiplock_queue_ready_jobs{type}            PENDING jobs that are due now
    skiplock_queue_oldest_ready_age_seconds    how long the oldest due job has waited (0: none)
    skiplock_queue_paused{type}                1 for each paused type
    skiplock_queue_held_back_jobs              pending jobs waiting for a slot of their concurrency key
    skiplock_queue_sequence_waiting_jobs       pending jobs of a sequence waiting for their turn
    skiplock_queue_held_sequences              sequence keys held by a dead-lettered job
    skiplock_queue_fair_waiting_jobs           pending jobs waiting their fair key's turn
    skiplock_queue_rate_waiting_jobs           pending jobs waiting for their rate key's window
    skiplock_queue_unserved_jobs{type}         PENDING jobs of a type no running pool serves (they wait)
    skiplock_queue_parked_jobs                 of those, the ones parked out of the claim's index
    skiplock_queue_debounced_jobs{type}        PENDING jobs with a debounce key (one per key)
    skiplock_queue_debounce_moves              enqueues folded into the pending debounced jobs
    skiplock_queue_aged_jobs{type}             PENDING jobs whose priority aging raised
    skiplock_queue_held_jobs{reason}           PENDING jobs not claimable now, by reason (why.py)
    skiplock_queue_refresh_timestamp_seconds   when the queue figures above were read
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from skiplock.pool.observer import ChildInfo, NullObserver, PoolSnapshot
from skiplock.pool.outage import Outage
from skiplock.queue_core import pacing
from skiplock.queue_core.errors import ConfigurationError

log = logging.getLogger("skiplock.metrics")

REFRESH_S = 15.0
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


class QueueCollector(Collector):
    """The queue as last read from the database; swapped whole, so a scrape sees one reading."""

    def __init__(self) -> None:
        self._reading: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def update(self, reading: dict[str, Any]) -> None:
        with self._lock:
            self._reading = reading

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            reading = self._reading
        if reading is None:
            return
        depth = GaugeMetricFamily("skiplock_queue_jobs", "Jobs in the queue by status and type.",
                                  labels=["status", "type"])
        for (status, job_type), n in sorted(reading["depth"].items()):
            depth.add_metric([status, job_type], n)
        yield depth
        ready = GaugeMetricFamily("skiplock_queue_ready_jobs", "PENDING jobs due now, by type.",
                                  labels=["type"])
        for job_type, n in sorted(reading["ready"].items()):
            ready.add_metric([job_type], n)
        yield ready
        yield GaugeMetricFamily("skiplock_queue_oldest_ready_age_seconds",
                                "Seconds the oldest due job has waited (0: none waiting).",
                                value=reading["oldest_ready_age_s"])
        paused = GaugeMetricFamily("skiplock_queue_paused", "1 for each paused job type.",
                                   labels=["type"])
        for job_type in sorted(reading["paused"]):
            paused.add_metric([job_type], 1)
        yield paused
        yield GaugeMetricFamily("skiplock_queue_held_back_jobs",
                                "PENDING jobs waiting for a slot of their concurrency key.",
                                value=reading.get("held_back", 0))
        yield GaugeMetricFamily("skiplock_queue_sequence_waiting_jobs",
                                "PENDING jobs of a sequence waiting for their turn.",
                                value=reading.get("sequence_waiting", 0))
        yield GaugeMetricFamily("skiplock_queue_held_sequences",
                                "Sequence keys held by a dead-lettered job (policy hold).",
                                value=reading.get("sequences_held", 0))
        yield GaugeMetricFamily("skiplock_queue_fair_waiting_jobs",
                                "PENDING jobs waiting their fair key's turn (fairness).",
                                value=reading.get("fair_waiting", 0))
        yield GaugeMetricFamily("skiplock_queue_rate_waiting_jobs",
                                "PENDING jobs waiting for a window of their rate key.",
                                value=reading.get("rate_waiting", 0))
        unserved = GaugeMetricFamily(
            "skiplock_queue_unserved_jobs",
            "PENDING jobs of a type that no running pool serves: they wait for one.",
            labels=["type"])
        for job_type, n in sorted(reading.get("unserved", {}).items()):
            unserved.add_metric([job_type], n)
        yield unserved
        yield GaugeMetricFamily("skiplock_queue_parked_jobs",
                                "PENDING jobs parked out of the claim's index until a pool "
                                "serves their type.", value=reading.get("parked", 0))
        debounced = GaugeMetricFamily(
            "skiplock_queue_debounced_jobs",
            "PENDING jobs with a debounce key: later enqueues of the key move them.",
            labels=["type"])
        for job_type, n in sorted(reading.get("debounced", {}).items()):
            debounced.add_metric([job_type], n)
        yield debounced
        yield GaugeMetricFamily("skiplock_queue_debounce_moves",
                                "Enqueues folded into the PENDING debounced jobs so far.",
                                value=reading.get("debounce_moves", 0))
        aged = GaugeMetricFamily("skiplock_queue_aged_jobs",
                                 "PENDING jobs whose priority aging raised.", labels=["type"])
        for job_type, n in sorted(reading.get("aged", {}).items()):
            aged.add_metric([job_type], n)
        yield aged
        held = GaugeMetricFamily(
            "skiplock_queue_held_jobs",
            "PENDING jobs not claimable now, by reason (slot, parked, parents, notDue, "
            "paused, ...); a job may wait for several.", labels=["reason"])
        for reason, n in sorted(reading.get("held", {}).items()):
            held.add_metric([reason], n)
        yield held
        yield GaugeMetricFamily("skiplock_queue_refresh_timestamp_seconds",
                                "Unix time the queue figures were read.", value=reading["at"])


def read_queue(live_s: float | None = None) -> dict[str, Any]:
    """One reading of the queue, through the partial indexes (cheap on a big table); a
    pool is live while its heartbeat is younger than `live_s` (ops.health.collect)."""
    from skiplock.ops import sql as ops_sql
    from skiplock.ops.health import Health, dead_by_type, routing
    from skiplock.ops.pauses import paused
    from skiplock.ops.processes import live_served
    from skiplock.queue_core import sql
    from skiplock.queue_core.config import cached_settings
    from skiplock.queue_core.database.db import connect
    from skiplock.queue_core.features import why
    from skiplock.queue_core.features.aging import aged_by_type
    from skiplock.queue_core.features.debounce import debounced_by_type
    from skiplock.queue_core.features.parking import parked_by_type
    from skiplock.queue_core.maintenance import pending_breakdown

    if live_s is None:
        live_s = cached_settings().effective_stuck_timeout_s
    served = Health()
    with connect() as c:
        base = pending_breakdown(c)
        dead = dead_by_type(c)
        paused_types = [p.type for p in paused(c)]
        held_back = sum(int(r.n) for r in c.execute(ops_sql.HELD_BACK))
        line = c.execute(sql.SEQUENCE_COUNTS).one()
        fair_waiting = int(c.execute(sql.COUNT_WAITING_TURN).scalar_one())
        rate_waiting = int(c.execute(sql.RATE_WAITING).scalar_one())
        served.pending_by_type = base.by_type
        served.processing_by_type = base.processing_by_type
        routing(served, live_served(live_s, c), parked_by_type(c))
        folded = debounced_by_type(c)
        aged = {t: n for t, (n, _) in aged_by_type(c).items()}
        held = why.count_held(c)
    depth: dict[tuple[str, str], int] = {}
    for job_type, n in base.by_type.items():
        depth[("PENDING", job_type)] = n
    for job_type, n in base.processing_by_type.items():
        depth[("PROCESSING", job_type)] = n
    for job_type, n in dead.items():
        depth[("DEAD_LETTER", job_type)] = n
    return {"depth": depth, "ready": base.ready_by_type,
            "oldest_ready_age_s": base.oldest_ready_age_s or 0.0,
            "paused": paused_types, "held_back": held_back, "unserved": served.unserved,
            "parked": served.parked,
            "debounced": {t: f.pending for t, f in folded.items()},
            "debounce_moves": sum(f.moves for f in folded.values()), "aged": aged,
            "sequence_waiting": int(line.waiting), "sequences_held": int(line.held),
            "fair_waiting": fair_waiting, "rate_waiting": rate_waiting, "held": held,
            "at": time.time()}


class MetricsObserver(NullObserver):
    def __init__(self, port: int | None, host: str = "127.0.0.1",
                 refresh_s: float = REFRESH_S, live_s: float | None = None) -> None:
        self.port = port
        self.host = host
        self.refresh_s = refresh_s
        self.live_s = live_s  # a pool is live while its heartbeat is younger (read_queue)
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("skiplock_jobs_started", "Jobs started.", ["type"], registry=r)
        self.completed = Counter("skiplock_jobs_completed", "Jobs completed.", ["type"],
                                 registry=r)
        self.failed = Counter("skiplock_jobs_failed",
                              "Job runs that failed (retried, dead-lettered or lost).", ["type"],
                              registry=r)
        self.retried = Counter("skiplock_jobs_retried", "Failed job runs that will be retried.",
                               ["type"], registry=r)
        self.dead_lettered = Counter("skiplock_jobs_dead_lettered",
                                     "Jobs moved to DEAD_LETTER.", ["type"], registry=r)
        self.lost = Counter("skiplock_jobs_lost",
                            "Jobs whose lease was lost before they finished.", ["type"],
                            registry=r)
        self.snoozed = Counter("skiplock_jobs_snoozed",
                               "Runs that asked to run again later (JobResult.snooze).",
                               ["type"], registry=r)
        self.duration = Histogram("skiplock_job_duration_seconds", "Job run time.", ["type"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.restarts = Counter("skiplock_child_restarts", "Children replaced, by cause.",
                                ["cause"], registry=r)
        self.children = Gauge("skiplock_pool_children", "Children alive.", registry=r)
        self.busy = Gauge("skiplock_pool_busy_children", "Children running a job.", registry=r)
        # Labelled by slot, not job id: one series per child, not one per job ever run.
        self.progress = Gauge("skiplock_worker_job_progress",
                              "Progress (0-1) its handler last reported for the job a child "
                              "runs; absent when idle or never reported.",
                              ["worker", "type"], registry=r)
        self.queue = QueueCollector()
        r.register(self.queue)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._server: Any = None
        self._next_refresh = 0.0
        self._faults = Outage("reading the queue for the metrics", log)

    def serve(self) -> None:
        """Bind the port now: a port that is taken stops the worker before it starts.

        (An exception in a hook is only logged by the master, and a pool
        without its metrics would go unnoticed until someone looked.)
        """
        if self.port is None or self._server is not None:
            return
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        log.info("serving Prometheus metrics on http://%s:%d/metrics", self.host, self.port,
                 extra={"metrics_host": self.host, "metrics_port": self.port})
        # Children are forked from the master: without this each would keep the
        # listening socket open, and a child still draining after its master
        # died would hold the port against the next master.
        os.register_at_fork(after_in_child=self._forget_server_in_child)

    def _forget_server_in_child(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.socket.close()

    # -- the master's hooks ----------------------------------------------------------

    def on_start(self, snapshot: PoolSnapshot) -> None:
        self.serve()
        self._pool(snapshot)
        self.refresh()

    def on_tick(self, snapshot: PoolSnapshot) -> None:
        self._pool(snapshot)
        if time.monotonic() >= self._next_refresh:
            self.refresh()

    def on_job_started(self, child: ChildInfo, job_id: str, job_type: str, attempt: int) -> None:
        self.started.labels(job_type).inc()

    def on_job_finished(self, child: ChildInfo, job_id: str, job_type: str, outcome: str,
                        duration_s: float) -> None:
        if outcome == "released":
            return  # shutdown gave it back: it neither succeeded nor failed
        if outcome == "snoozed":  # asked to run again later: neither a success nor a failure
            self.snoozed.labels(job_type).inc()
            return
        self.duration.labels(job_type).observe(max(duration_s, 0.0))
        if outcome == "completed":
            self.completed.labels(job_type).inc()
            return
        self.failed.labels(job_type).inc()
        if outcome == "retried":
            self.retried.labels(job_type).inc()
        elif outcome == "dead_lettered":
            self.dead_lettered.labels(job_type).inc()
        elif outcome == "lost":
            self.lost.labels(job_type).inc()

    def on_child_exit(self, child: ChildInfo, cause: str) -> None:
        if cause != "stopped":  # a pool that stops restarts nothing
            self.restarts.labels(cause).inc()

    def on_stop(self, snapshot: PoolSnapshot) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the rest ----------------------------------------------------------------------

    def _pool(self, snapshot: PoolSnapshot) -> None:
        self.children.set(len(snapshot.children))
        self.busy.set(sum(1 for c in snapshot.children if c.job_id))
        self.progress.clear()
        for c in snapshot.children:
            if c.job_type and c.progress is not None and c.progress.fraction is not None:
                self.progress.labels(str(c.index), c.job_type).set(c.progress.fraction)

    def refresh(self) -> None:
        began = time.monotonic()
        self._faults.run(lambda: self.queue.update(read_queue(self.live_s)))
        # The reading counts through the partial indexes, which a held snapshot fills
        # with entries of jobs long gone: when it is slow it runs less often, in the
        # master's loop as it is (queue_core/pacing.py).
        took = time.monotonic() - began
        self._next_refresh = began + pacing.delay(self.refresh_s, took)
