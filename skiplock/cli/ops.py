"""Looking at a running queue: stats, jobs, ps; holding a type back: pause, resume."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from skiplock.cli.app import Duration, main, print_json
from skiplock.cli.display import echo, safe
from skiplock.queue_core.durations import format_duration
from skiplock.queue_core.errors import InvalidJob, SkiplockError

STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "DEAD_LETTER")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _age(seconds: float | None) -> str:
    return format_duration(seconds) if seconds is not None else "-"


def _print_health(h: Any) -> None:
    def line(label: str, status: str, extra: str = "") -> None:
        mark = "~" if status in h.estimated else " "
        echo(f"{label:<12}{mark}{h.counts.get(status, 0):>12}{extra}")

    line("pending", "PENDING", f"  (ready {h.ready}, scheduled {h.scheduled})")
    line("processing", "PROCESSING")
    line("completed", "COMPLETED", "  (~ estimate from the table statistics)"
         if "COMPLETED" in h.estimated else "")
    line("dead letter", "DEAD_LETTER")
    if h.counts.get("FAILED"):
        line("cancelled", "FAILED")  # FAILED is what a cancel ends in
    echo(f"oldest ready job: {_age(h.oldest_ready_age_s)}")
    rates = ", ".join(f"{n} in {m}m ({n / (60 * m):.1f}/s)"
                      for m, n in h.completed_per_window.items())
    echo(f"completed: {rates}")
    dead = ", ".join(f"{n} in {m}m" for m, n in h.dead_per_window.items())
    echo(f"dead-lettered: {dead}")
    if h.pending_by_type or h.processing_by_type:
        echo("by type:                         pending      ready processing")
        for name in sorted(set(h.pending_by_type) | set(h.processing_by_type)):
            paused = "  PAUSED" if name in h.paused else ""
            unserved = "  NO POOL" if name in h.unserved else ""
            echo(f"  {name:<28} {h.pending_by_type.get(name, 0):>10} "
                       f"{h.ready_by_type.get(name, 0):>10} "
                       f"{h.processing_by_type.get(name, 0):>10}{paused}{unserved}")
    if h.dead_by_type:
        echo("dead letters by type:")
        for name, n in sorted(h.dead_by_type.items()):
            echo(f"  {name:<28} {n:>10}")
    if h.held_back:
        echo(f"held back by a concurrency limit: {h.held_back} pending (biggest keys: "
             + ", ".join(f"{k} {n}" for k, n in h.held_back_by_key.items()) + ")")
    if h.debounced:
        echo(f"debounced: {h.debounced} pending with a debounce key ({h.debounced_not_due} not "
             f"due yet, {h.debounce_moves} enqueues folded in): " + ", ".join(
                 f"{name} {n}" for name, n in sorted(h.debounced_by_type.items())))
    if h.aged:
        echo(f"aged: {h.aged} pending raised by priority aging: " + ", ".join(
            f"{name} {n}" for name, n in sorted(h.aged_by_type.items())))
    if h.sequences:
        echo(f"sequences: {h.sequences} keys with jobs in line, {h.sequence_waiting} jobs "
             f"waiting for their turn")
    if h.sequences_held:
        echo(f"sequences held by a dead letter: {h.sequences_held} (retry, delete or "
             "`skiplock sequence release KEY`): " + ", ".join(
                 f"{k} (job {head}, {n} waiting)" for k, (head, n) in h.held_sequences.items()))
    if h.fair_keys:
        echo(f"waiting their key's turn (fairness): {h.fair_waiting} pending (keys: "
             + ", ".join(f"{k} weight {f['weight']}, {f['queued']}/{f['window']} in the queue, "
                         f"{f['waiting']} waiting" for k, f in h.fair_keys.items()) + ")")
    if h.rate_waiting:
        echo(f"waiting for a rate window: {h.rate_waiting} pending (biggest keys: " + ", ".join(
            f"{k} {v['rate']} {v['waiting']} waiting, next start "
            + (v["nextAt"][11:19] if v["nextAt"] else "-")
            for k, v in h.rate_keys.items()) + ")")
    if h.paused:
        echo("paused types: " + ", ".join(
            f"{name} ({n} pending)" for name, n in sorted(h.paused.items())))
    if h.unserved:
        echo(f"served by no running pool ({h.pools} running), waiting for one: " + ", ".join(
            f"{name} ({n} pending, {h.parked_by_type.get(name, 0)} parked)"
            for name, n in sorted(h.unserved.items())))
    held = h.held_labelled()
    if held:
        echo("pending but not claimable now: " + ", ".join(f"{n} {label}" for label, n in held)
             + " (a job may wait for several reasons; skiplock job ID says which)")
    t = h.table
    echo(f"table: {_size(t.total_bytes)} (heap {_size(t.table_bytes)}, indexes "
               f"{_size(t.index_bytes)}), {t.live_tuples} live / {t.dead_tuples} dead rows")
    vac = t.last_autovacuum or t.last_vacuum
    echo(f"last vacuum: {vac.isoformat(timespec='seconds') if vac else 'never'}")
    if t.horizon_holder:
        echo(f"oldest transaction holding vacuum back: {t.horizon_holder}, open "
                   f"{_age(t.horizon_age_s)}, {t.horizon_xid_age} transactions ago")
    else:
        echo("oldest transaction holding vacuum back: none")


@main.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print the figures as JSON (with --watch: one JSON object per line).")
@click.option("--watch", type=Duration(min_s=0.1), default=None, metavar="SECONDS",
              help="Print again every SECONDS until interrupted (Ctrl-C).")
@click.option("--exact", is_flag=True,
              help="Count every status exactly (scans the whole table; slow on big tables). "
                   "Without it COMPLETED is estimated from the table statistics.")
def stats(as_json: bool, watch: float | None, exact: bool) -> None:
    """The queue at a glance, fast on a table of any size.

    Counts by status (PENDING, PROCESSING and dead letters exact; COMPLETED
    estimated unless --exact), pending and running work by type, ready versus
    scheduled, the age of the oldest ready job, jobs finished in the last 1, 5
    and 15 minutes, dead letters by type, paused types, the types that no
    running pool serves (NO POOL: their jobs wait for one), sequences (keys with
    jobs in line, and those held by a dead letter), the keys whose jobs wait for
    a rate window (their rate, how many wait, when the next may start), fair
    keys (weight, jobs in the queue out of their window, jobs waiting their
    turn), debounced and aged jobs, the pending jobs that cannot be claimed now
    by reason (waiting for a concurrency slot, parked, waiting for parents, not
    due, paused, ...), and the health of the job table: size, dead rows, last vacuum, and the oldest open
    transaction that keeps vacuum from removing dead rows.
    """
    from skiplock.ops.health import collect

    while True:
        figures = collect(exact=exact)
        if as_json:
            data = figures.to_dict()
            if watch:
                echo(json.dumps(data, default=str))
            else:
                print_json(data)
        else:
            if watch:
                click.clear()
                echo(time.strftime("%Y-%m-%d %H:%M:%S  ") + f"(every {watch:g}s, Ctrl-C stops)")
            _print_health(figures)
        if not watch:
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


@main.command()
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), default=None,
              help="Only jobs in this status (listed in the order its index keeps: PENDING in "
                   "claim order, PROCESSING oldest heartbeat first, finished newest first).")
@click.option("--type", "job_type", default=None, help="Only jobs of this type.")
@click.option("--user-id", default=None, help="Only jobs of this user.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="At most this many jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as a JSON array.")
def jobs(status: str | None, job_type: str | None, user_id: str | None, limit: int,
         as_json: bool) -> None:
    """List jobs, newest first (see `skiplock job ID` for one job in full)."""
    from skiplock.ops.jobs import list_jobs

    rows = list_jobs(status, job_type, user_id, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        echo("no jobs", err=True)
        return
    echo(f"{'id':<32}  {'type':<24} {'status':<11} {'att':>5}  {'created':<19}  last error")
    for r in rows:
        error = (r["lastError"] or "").splitlines()[0][:60] if r["lastError"] else ""
        created = r["createdAt"].strftime("%Y-%m-%d %H:%M:%S")
        echo(f"{r['id']:<32}  {r['type'][:24]:<24} {r['status']:<11} "
                   f"{r['attempts']:>2}/{r['maxAttempts']:<2}  {created}  {error}")


@main.command()
@click.argument("job_type", metavar="TYPE")
@click.option("--reason", default=None, help="Why, for whoever looks at `stats` later.")
def pause(job_type: str, reason: str | None) -> None:
    """Stop every pool from claiming jobs of TYPE; they stay PENDING until `resume`.

    Running jobs finish. The pause is in the database: it holds on every host
    and across restarts. New jobs of TYPE can still be enqueued.
    """
    from skiplock.ops.pauses import pause as do_pause

    if not job_type.strip():
        raise InvalidJob("job type must be a non-empty string")
    if do_pause(job_type, reason):
        echo(f"paused {job_type}")
    else:
        echo(f"{job_type} was already paused")


@main.command()
@click.argument("job_type", metavar="TYPE")
def resume(job_type: str) -> None:
    """Let pools claim jobs of TYPE again."""
    from skiplock.ops.pauses import resume as do_resume

    if do_resume(job_type):
        echo(f"resumed {job_type}")
    else:
        raise SkiplockError(f"{safe(job_type)} is not paused")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the processes as a JSON array.")
def ps(as_json: bool) -> None:
    """The live pools on every host: each master and its children, with the job each runs.

    Masters write this table on their heartbeat; a master whose heartbeat is
    older than the stuck timeout is shown as STALE until a live master (or
    `skiplock recover`) prunes it.
    """
    from skiplock.ops.processes import list_processes
    from skiplock.queue_core.config import load_settings

    stale_after = load_settings().effective_stuck_timeout_s
    rows = list_processes()
    if as_json:
        print_json([dict(r.to_dict(), stale=r.heartbeat_age_s > stale_after) for r in rows])
        return
    if not rows:
        echo("no pools are running", err=True)
        return
    pools = [r for r in rows if r.kind == "master"]
    children = [r for r in rows if r.kind == "child"]
    hosts = {r.host for r in pools}
    echo(f"{len(pools)} pools on {len(hosts)} hosts, {len(children)} children, "
               f"{sum(1 for r in children if r.job_id)} running a job")
    for r in rows:
        beat = f"heartbeat {_age(r.heartbeat_age_s)} ago"
        if r.heartbeat_age_s > stale_after:
            beat += " STALE"
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S")
        if r.kind == "master":
            echo(f"{r.host}  pid {r.pid}  master ({r.state}, {r.concurrency} children)  "
                       f"started {started}  {beat}")
            echo("  serves " + (", ".join(r.served) if r.served is not None
                                else "every type (an older skiplock)"))
        else:
            job = (f"{r.job_type} {r.job_id} for {_age(r.job_age_s)}" if r.job_id else "idle")
            if r.job_id and (r.job_progress is not None or r.job_progress_message):
                done = f"{r.job_progress:.0%}" if r.job_progress is not None else ""
                job += f"  [{' '.join(p for p in (done, r.job_progress_message) if p)}]"
            echo(f"  worker {r.slot}  pid {r.pid}  started {started}  {job}")
