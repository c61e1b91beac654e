"""`skiplock backfill`: enqueue missing work in batches, safe to interrupt and rerun."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import click

from skiplock.cli.app import Day, main, print_json

DATE = Day()
INSTANT = Day(with_time=True)

_COMMON = [
    click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000,
                 show_default=True,
                 help="Jobs written per round trip (each batch is its own transaction)."),
    click.option("--dry-run", is_flag=True,
                 help="Count what would be enqueued, and what is already queued; write nothing."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print the summary as JSON on stdout."),
]


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_COMMON):
        command = option(command)
    return command


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A bar on a terminal; otherwise a plain line per batch (at most one a second)."""
    if sys.stderr.isatty():
        with click.progressbar(length=total, label=label, file=sys.stderr,
                               show_pos=True, show_eta=True) as bar:
            yield bar.update
        return
    done = 0
    last = 0.0

    def update(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= 1.0 or done >= total:
            last = now
            click.echo(f"{label}: {done}/{total}", err=True)

    yield update


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _report(outcome: Any, job_type: str, as_json: bool) -> None:
    if as_json:
        print_json(outcome.to_dict())
        return
    if outcome.dry_run:
        click.echo(f"would enqueue {outcome.candidates - outcome.already_queued} {job_type} jobs "
                   f"({outcome.already_queued} of {outcome.candidates} already queued; dry run)")
    else:
        click.echo(f"enqueued {outcome.created} {job_type} jobs "
                   f"({outcome.already_queued} of {outcome.candidates} already queued)")
    if outcome.not_over:
        click.echo(f"left out {outcome.not_over} periods not over yet in their user's time zone",
                   err=True)
    if outcome.skipped:
        click.echo(f"skipped {len(outcome.skipped)}:", err=True)
        for reason in outcome.skipped[:10]:
            click.echo(f"  {reason}", err=True)
        if len(outcome.skipped) > 10:
            click.echo(f"  ... and {len(outcome.skipped) - 10} more", err=True)


@main.group()
def backfill() -> None:
    """Enqueue work the domain is missing, in batches, with the seed's idempotency keys.

    A rerun after an interruption (Ctrl-C, a crash, a lost connection) adds
    only what is not queued yet: nothing is enqueued twice. Progress goes to
    stderr (a bar on a terminal, plain lines otherwise); the summary to stdout.
    """


@backfill.command("interpret")
@click.option("--user-id", default=None, help="Only this user's events.")
@click.option("--since", type=INSTANT, default=None,
              help="Only events that happened at or after this (YYYY-MM-DD or ISO time; UTC "
                   "unless it carries an offset).")
@click.option("--until", type=INSTANT, default=None,
              help="Only events that happened before this (same forms as --since).")
@_common
def backfill_interpret(user_id: str | None, since: datetime | None, until: datetime | None,
                       batch_size: int, dry_run: bool, as_json: bool) -> None:
    """INTERPRET_EVENT for every event that has no interpretation (key interpret:{eventId})."""
    from skiplock.handlers import backfill as work
    from skiplock.queue_core.errors import InvalidJob

    since, until = _utc(since), _utc(until)
    if since and until and until <= since:
        raise InvalidJob(f"--until ({until:%Y-%m-%d %H:%M:%S}) is not after --since "
                         f"({since:%Y-%m-%d %H:%M:%S})")
    work.require_demo()
    total, _ = work.count_interpret(user_id, since, until)
    with _progress(total, "backfill interpret") as update:
        outcome = work.backfill_interpret(user_id=user_id, since=since, until=until,
                                          batch_size=batch_size, dry_run=dry_run,
                                          progress=update)
    _report(outcome, "INTERPRET_EVENT", as_json)


@backfill.command("reviews")
@click.option("--period", type=click.Choice(["daily", "weekly", "monthly"]), required=True,
              help="Review period: daily (key YYYY-MM-DD), weekly (ISO week, YYYY-Www) or "
                   "monthly (YYYY-MM).")
@click.option("--from", "first", type=DATE, required=True,
              help="First day (YYYY-MM-DD); the period that contains it is included.")
@click.option("--to", "last", type=DATE, default=None,
              help="Last day (YYYY-MM-DD; default: today); periods not yet over in the user's "
                   "time zone are left out.")
@click.option("--user-id", default=None, help="Only this user.")
@_common
def backfill_reviews(period: str, first: datetime, last: datetime | None, user_id: str | None,
                     batch_size: int, dry_run: bool, as_json: bool) -> None:
    """GENERATE_REVIEW for every user and every ended period between --from and --to.

    Periods are those of each user's own time zone (the "User" table's IANA
    zone); the key is review:{userId}:{DAILY|WEEKLY|MONTHLY}:{periodKey}.
    """
    from skiplock.handlers import backfill as work

    work.require_demo()
    first_day: date = first.date()
    last_day: date = last.date() if last else work.db_now().date()
    wanted = work.periods(period, first_day, last_day)
    total = work.count_users(user_id) * len(wanted)
    with _progress(total, f"backfill reviews ({period})") as update:
        outcome = work.backfill_reviews(period, first_day, last_day, user_id=user_id,
                                        batch_size=batch_size, dry_run=dry_run, progress=update)
    _report(outcome, "GENERATE_REVIEW", as_json)
