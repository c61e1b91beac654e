"""Commands of the job features: cancel, wait (and `enqueue --wait`, in core.py)."""

from __future__ import annotations

import json
import sys

import click

from skiplock.cli.app import DURATION, main, print_json


def wait_and_report(job_id: str, timeout: float | None) -> None:
    """Wait for the job; its result on stdout (exit 0), or its error on stderr (exit 1)."""
    from skiplock.queue_core.features.waiting import wait as wait_for_job

    job = wait_for_job(job_id, timeout)
    if job.status == "COMPLETED":
        click.echo(json.dumps(job.result, ensure_ascii=False))
        return
    click.echo(f"skiplock: job {job_id} ended {job.status}: {job.last_error}", err=True)
    sys.exit(1)


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--timeout", type=DURATION, default=None,
              help="Give up after this long (exit 1; the job goes on).")
def wait(job_id: str, timeout: float | None) -> None:
    """Wait until job ID finishes; print its result (exit 0) or its error (exit 1).

    Woken by a notification when the job ends; with SKIPLOCK_LISTEN=0 (behind
    PgBouncer in transaction mode) it polls instead. A job waiting for a retry
    is not finished yet.
    """
    wait_and_report(job_id, timeout)


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
@click.option("--type", "job_type", default=None,
              help="Cancel every pending or running job of this type.")
@click.option("--user-id", default=None,
              help="Cancel every pending or running job of this user (with --type: both).")
@click.option("--dry-run", is_flag=True, help="Change nothing; say what would be cancelled.")
@click.option("--by", default=None,
              help="Who cancels, for lastError (default: user@host of this shell).")
@click.option("--json", "as_json", is_flag=True, help="One object per job, as JSON.")
def cancel(job_ids: tuple[str, ...], job_type: str | None, user_id: str | None,
           dry_run: bool, by: str | None, as_json: bool) -> None:
    """Cancel jobs: a pending job never starts; a running one is stopped.

    A running job is stopped by the pool that runs it, on whichever host,
    within about one heartbeat: its transaction rolls back, so its writes and
    the next job of its chain vanish with it. The job ends FAILED, with a
    lastError that says who cancelled it and when (`skiplock job ID`). A job
    that had already finished is left alone, and the output says so.

    \b
      skiplock cancel 0190c3a1e2f4...            one job
      skiplock cancel --user-id u_42 --dry-run   what a user's cancel would touch
      skiplock cancel --type GENERATE_REVIEW     every pending or running review

    Exit status 1 if a given id does not exist.
    """
    from skiplock.queue_core.features.cancel import (
        CancelOutcome,
        cancel_many,
        cancel_matching,
        default_canceller,
    )

    if bool(job_ids) == bool(job_type or user_id):
        raise click.UsageError("give job ids, or --type and/or --user-id (not both)")
    who = by or f"cli:{default_canceller()}"
    if job_ids:
        if dry_run:
            raise click.UsageError("--dry-run goes with --type or --user-id")
        results = cancel_many(job_ids, by=who)
    else:
        results = cancel_matching(job_type=job_type, user_id=user_id, by=who, dry_run=dry_run)
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        for result in results:
            click.echo(result.describe())
        counts = {o: sum(1 for r in results if r.outcome is o) for o in CancelOutcome}
        verb = "would cancel" if dry_run else "cancelled"
        click.echo(f"{verb} {counts[CancelOutcome.CANCELLED]} pending, "
                   f"{'would stop' if dry_run else 'stopping'} "
                   f"{counts[CancelOutcome.CANCELLING]} running; "
                   f"{counts[CancelOutcome.FINISHED]} already finished, "
                   f"{counts[CancelOutcome.NOT_FOUND]} not found", err=True)
    if any(r.outcome is CancelOutcome.NOT_FOUND for r in results):
        sys.exit(1)


@main.command()
@click.argument("batch_id", metavar="ID")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="List at most this many members (0: the counts alone).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the batch's counts and members as JSON.")
def batch(batch_id: str, limit: int, as_json: bool) -> None:
    """Show batch ID (`skiplock.batch`): its members' counts, its callback, its members."""
    from skiplock.cli.display import echo, safe
    from skiplock.queue_core.errors import JobNotFound
    from skiplock.queue_core.features.batches import batch_members, get_batch

    found = get_batch(batch_id)
    if found is None:
        raise JobNotFound(f"no batch with id {safe(batch_id)!r}")
    members = batch_members(batch_id, limit=limit) if limit else []
    if as_json:
        print_json({**found.to_dict(), "members": [
            {"id": m.id, "type": m.type, "status": m.status, "attempts": m.attempts}
            for m in members]})
        return
    echo(f"batch {found.id}: {found.total} members, {found.ended} ended "
         f"({found.progress:.0%}): {found.completed} completed, {found.dead_lettered} "
         f"dead-lettered, {found.cancelled} cancelled, {found.pending} pending, "
         f"{found.processing} running")
    callback = found.callback_status or "deleted"
    waits = " (waits for the members)" if found.ended_at is None else ""
    echo(f"callback {found.callback_id} {found.callback_type or ''}: {callback}{waits}")
    for m in members:
        echo(f"  {m.id}  {m.type:<24} {m.status:<11} attempts {m.attempts}")
    if limit and len(members) == limit and found.total > limit:
        echo(f"  ... and {found.total - limit} more (--limit)")


@main.group()
def sequence() -> None:
    """Sequences (`enqueue(..., sequence=KEY)`): keys whose jobs run one at a time, in order."""


@sequence.command("held")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="List at most this many keys, those with the most jobs waiting first.")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
def sequence_held(limit: int, as_json: bool) -> None:
    """List the keys held by a dead-lettered job, and how many jobs wait behind it."""
    from skiplock.cli.display import echo
    from skiplock.queue_core.features.sequences import held_sequences

    found = held_sequences(limit)
    if as_json:
        print_json([{"key": s.key, "deadLetter": s.head, "waiting": s.waiting} for s in found])
        return
    for s in found:
        echo(f"{s.key}  held by job {s.head}  {s.waiting} waiting")
    if not found:
        echo("no sequence is held")


@sequence.command("release")
@click.argument("key", metavar="KEY")
def sequence_release(key: str) -> None:
    """Let KEY go on without its dead-lettered job, which stays as it is.

    The next job of KEY runs; to run the dead letter first instead, retry it
    (`skiplock retry ID`). Exit 1 when KEY is not held by a dead letter."""
    from skiplock.cli.display import echo, safe
    from skiplock.queue_core.features.sequences import release_sequence

    head = release_sequence(key)
    echo(f"sequence {safe(key)!r} released: " + (f"job {head} runs next" if head
                                                else "no job was waiting"))


@main.group()
def history() -> None:
    """Finished jobs in history partitions (docs/operations.md, "History")."""


@history.command("move")
@click.option("--all", "everything", is_flag=True,
              help="Every finished job, however recent (dead letters too): a first move "
                   "after adoption, or before a downgrade's check.")
def history_move(everything: bool) -> None:
    """Move finished jobs to history now, in batches, with a progress bar.

    As every pool master does every few seconds: COMPLETED and cancelled jobs finished
    skiplock.history_after ago (60 s), dead letters skiplock.history_dead_after ago
    (7 days). Resumable: stop it, and the next run takes what is left."""
    from skiplock.queue_core.features import history as hist

    found = hist.settings()
    after_s, dead_s = (0.0, 0.0) if everything else (found.after_s, found.dead_after_s)
    total = hist.movable(after_s, dead_s)
    with click.progressbar(length=total, label="moving to history", file=sys.stderr,
                           show_pos=True) as bar:
        moved = hist.move(after_s, dead_s, progress=bar.update)
    click.echo(f"moved {moved} jobs to history")


@history.command("partitions")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_partitions(as_json: bool) -> None:
    """The history partitions, oldest first, with their bounds."""
    from skiplock.queue_core.features import history as hist

    parts = hist.partitions()
    if as_json:
        print_json([{"name": p.name, "from": p.lower.isoformat(), "to": p.upper.isoformat(),
                     "detaching": p.detaching} for p in parts])
        return
    for p in parts:
        click.echo(f"{p.name}  {p.lower.isoformat()} .. {p.upper.isoformat()}"
                   + ("  (detaching)" if p.detaching else ""))
