"""`skiplock schedule`: look at the recurring jobs every master runs, or run the due ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from skiplock.cli.app import fail, main, print_json

if TYPE_CHECKING:
    from skiplock.ops.schedules import Schedule

_FILE = click.option(
    "--file", "path", default=None, metavar="PATH",
    help="Schedule file (TOML or JSON; default: SKIPLOCK_SCHEDULE_FILE, as `skiplock worker`).")


def _schedules(path: str | None) -> list[Schedule]:
    from skiplock.ops import schedules
    from skiplock.queue_core.config import load_settings

    found = schedules.load(path or load_settings().schedule_file)
    if not found:
        raise click.UsageError("no schedules: give --file or set SKIPLOCK_SCHEDULE_FILE")
    return found


@main.group()
def schedule() -> None:
    """Recurring jobs from cron expressions, run by every `skiplock worker` master.

    Each occurrence is enqueued once however many masters run (its
    idempotency key is the schedule's name and the occurrence's time), and a
    master that starts after an outage catches up on what was missed, within
    each schedule's catch_up window. The file format is described in
    `skiplock/ops/schedules.py` and in docs/operations.md ("Recurring jobs").
    """


@schedule.command("list")
@_FILE
@click.option("--count", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Next occurrences to show per schedule.")
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
@click.option("--offline", is_flag=True,
              help="Do not ask the database for the last occurrence enqueued.")
def schedule_list(path: str | None, count: int, as_json: bool, offline: bool) -> None:
    """The schedules, their last enqueued occurrence and their next occurrences."""
    from skiplock.ops import schedules

    found = _schedules(path)
    last = {} if offline else schedules.cursors(s.name for s in found)
    now = datetime.now(UTC)
    rows = []
    for s in found:
        upcoming = []
        for occurrence in s.parsed.occurrences(now, s.zone):
            upcoming.append(occurrence)
            if len(upcoming) == count:
                break
        rows.append((s, last.get(s.name), upcoming))
    if as_json:
        print_json([dict(s.to_dict(), lastOccurrence=prev.isoformat() if prev else None,
                         next=[o.isoformat() for o in nxt]) for s, prev, nxt in rows])
        return
    for s, prev, nxt in rows:
        what = s.job_type
        click.echo(f"{s.name}: {s.cron} ({s.timezone}) -> {what}, catch-up {s.catch_up_s:g}s")
        click.echo(f"  last enqueued: {prev.astimezone(s.zone).isoformat() if prev else '-'}")
        for o in nxt:
            click.echo(f"  next: {o.astimezone(s.zone).isoformat()}")


@schedule.command("run")
@_FILE
def schedule_run(path: str | None) -> None:
    """Enqueue the occurrences due now (what a master does every few seconds), and exit.

    For hosts that run no pool, or to check a schedule file; safe beside
    running masters. Exits 1 when a schedule could not enqueue its occurrences
    (the others still ran; the failed ones are tried again at the next run).
    """
    from skiplock.ops import schedules

    found = _schedules(path)
    result = schedules.run_due(found)
    for name, occurrences in result.enqueued.items():
        click.echo(f"{name}: {len(occurrences)} due, last {occurrences[-1].isoformat()}",
                   err=True)
    click.echo(f"enqueued {result.created} jobs")
    if result.failed:
        # A cron job or a deploy check that runs this must see the failure in its status.
        fail(f"{len(result.failed)} of {len(found)} schedules "
             "failed: " + "; ".join(f"{name} ({why})" for name, why in result.failed.items()))
