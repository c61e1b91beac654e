"""`skiplock demo`: a user, a few weeks of journal, the six job types through the pool."""

from __future__ import annotations

import json
import time

import click

from skiplock.cli.app import Duration, main


@main.command()
@click.option("--weeks", type=click.IntRange(1, 52), default=3, show_default=True,
              help="Weeks of sample journal entries.")
@click.option("--timezone", default="Europe/Paris", show_default=True,
              help="The demo user's IANA time zone.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=None,
              help="Worker children (default: SKIPLOCK_CONCURRENCY, else one per CPU).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the sample data.")
@click.option("--timeout", type=Duration(min_s=1), default="300", show_default=True,
              help="Give up waiting for the chains after this many seconds.")
def demo(weeks: int, timezone: str, concurrency: int | None, seed: int, timeout: float) -> None:
    """Create a demo user with sample entries, run every chain, print what each step made."""
    from skiplock import pool
    from skiplock.handlers.demo import format_report, pending_jobs, report, seed_demo
    from skiplock.handlers.domain.periods import load_timezone
    from skiplock.queue_core.config import load_settings
    from skiplock.queue_core.database import migrate
    from skiplock.queue_core.database.urls import database_url, redact

    try:
        load_timezone(timezone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timezone") from None
    settings = load_settings(concurrency=concurrency)
    url = database_url(settings, start=True)
    migrate.upgrade(url, demo=True)
    click.echo(f"database: {redact(url)}")
    started = time.monotonic()
    seeded = seed_demo(timezone, days=7 * weeks, seed=seed)
    click.echo(f"enqueued {seeded.jobs} jobs for {seeded.events} entries; running "
               f"{settings.effective_concurrency} workers until the chains drain…")
    deadline = started + timeout

    def done() -> bool:
        return pending_jobs(seeded.user_id) == 0 or time.monotonic() > deadline

    pool.run(settings, until=done)
    wall = time.monotonic() - started
    for line in format_report(seeded, report(seeded.user_id), wall):
        click.echo(line)
    left = pending_jobs(seeded.user_id)
    if left:
        raise click.ClickException(f"{left} jobs were still pending after {timeout:g}s")
    month = seeded.first_day.strftime("%Y-%m")  # the journal's first month has entries
    payload = json.dumps({"userId": seeded.user_id, "type": "MONTHLY", "periodKey": month,
                          "timezone": seeded.timezone})
    click.echo(f"\nrun one more yourself (a worker must be running: make worker):\n"
               f"  .venv/bin/skiplock enqueue GENERATE_REVIEW --wait '{payload}'")
