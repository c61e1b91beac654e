"""Core commands: migrate, enqueue, job, retry, recover, cleanup, db (`stats` is in ops.py)."""

from __future__ import annotations

import json
import sys

import click

from skiplock.cli.app import DURATION, main, print_json
from skiplock.queue_core.config import load_settings
from skiplock.queue_core.errors import InvalidPayload, JobNotFound, UnknownJobType


@main.command()
def migrate() -> None:
    """Create or upgrade the job table (and the domain tables) to the latest schema.

    Safe to run on every deploy and from several hosts at once: migrations
    take an advisory lock, and a database that is up to date is left alone.
    """
    from skiplock.queue_core import migrate as migrations
    from skiplock.queue_core.urls import database_url, redact

    url = database_url()
    migrations.upgrade(url)
    click.echo(f"database {redact(url)} is at revision {migrations.current_revision(url)}",
               err=True)


def _known_types(extra_modules: tuple[str, ...]) -> list[str]:
    from skiplock import handlers
    from skiplock.queue_core.payloads import BUILTIN_TYPES

    handlers.load_handler_modules([*load_settings().handlers, *extra_modules])
    return sorted(set(handlers.registered_types()) | set(BUILTIN_TYPES))


@main.command()
@click.argument("job_type", metavar="TYPE")
@click.argument("payload", metavar="JSON")
@click.option("--priority", type=int, default=0, show_default=True,
              help="Higher runs first.")
@click.option("--delay", type=DURATION, default=None,
              help="Run no sooner than this from now: 90, 30s, 5m, 2h, 7d.")
@click.option("--key", "idempotency_key", default=None,
              help="Idempotency key: if a job with this key exists, print its id instead.")
@click.option("--max-attempts", type=int, default=3, show_default=True,
              help="Attempts before the job is dead-lettered.")
@click.option("--user-id", default=None, help="The user the job belongs to.")
@click.option("--handlers", "handler_modules", multiple=True, metavar="MODULE",
              help="Import MODULE so that its job types are known (repeatable).")
@click.option("--any-type", is_flag=True,
              help="Accept a type no handler here knows (one served by another deployment).")
def enqueue(job_type: str, payload: str, priority: int, delay: float | None,
            idempotency_key: str | None, max_attempts: int, user_id: str | None,
            handler_modules: tuple[str, ...], any_type: bool) -> None:
    """Add a job of TYPE with the JSON object PAYLOAD ('-' reads it from stdin).

    Prints the job id alone on stdout.

    \b
      skiplock enqueue INTERPRET_EVENT '{"eventId": "evt_1"}'
      skiplock enqueue GENERATE_REVIEW @review.json --delay 5m
    """
    from skiplock.queue_core import enqueue as do_enqueue

    if payload == "-":
        payload = sys.stdin.read()
    elif payload.startswith("@"):
        try:
            with open(payload[1:], encoding="utf-8") as handle:
                payload = handle.read()
        except OSError as exc:
            raise InvalidPayload(
                f"cannot read payload file {payload[1:]}: {exc.strerror}"
            ) from None
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"payload is not valid JSON: {exc}") from None
    if not any_type:
        known = _known_types(handler_modules)
        if job_type not in known:
            raise UnknownJobType(
                f"unknown job type {job_type!r} (known: {', '.join(known)}; "
                "--handlers MODULE adds more, --any-type skips this check)"
            )
    job_id = do_enqueue(job_type, data, priority=priority, delay=delay,
                        max_attempts=max_attempts, idempotency_key=idempotency_key,
                        user_id=user_id)
    click.echo(job_id)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the row as JSON.")
def job(job_id: str, as_json: bool) -> None:
    """Show everything about one job, its last error in full."""
    from skiplock.queue_core import get_job

    found = get_job(job_id)
    if found is None:
        raise JobNotFound(f"no job with id {job_id!r}")
    row = found.to_dict()
    if as_json:
        print_json(row)
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        if key in ("payload", "result") and value is not None:
            value = json.dumps(value, ensure_ascii=False)
        if key == "lastError":
            continue
        click.echo(f"{key:<{width}}  {'' if value is None else value}")
    if found.last_error:
        click.echo(f"\nlastError:\n{found.last_error}")


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
@click.option("--all-dead", is_flag=True, help="Retry every dead-lettered job.")
@click.option("--type", "job_type", default=None,
              help="With --all-dead: only jobs of this type.")
def retry(job_ids: tuple[str, ...], all_dead: bool, job_type: str | None) -> None:
    """Move dead-lettered jobs back to PENDING with fresh attempts."""
    from skiplock.queue_core import retry_dead

    if bool(job_ids) == all_dead:
        raise click.UsageError("give job ids, or --all-dead (not both)")
    if job_type and not all_dead:
        raise click.UsageError("--type goes with --all-dead")
    if job_ids:
        retried = retry_dead(job_ids)
        missing = sorted(set(job_ids) - set(retried))
        if missing:
            click.echo(f"not dead-lettered (left alone): {', '.join(missing)}", err=True)
    elif job_type:
        retried = retry_dead(job_type=job_type)
    else:
        retried = retry_dead(all_dead=True)
    click.echo(f"retried {len(retried)} jobs")


@main.command()
@click.option("--stuck-timeout", type=DURATION, default=None,
              help="Rescue jobs without a heartbeat for this long (default: the "
                   "configured stuck timeout, 6 heartbeats).")
def recover(stuck_timeout: float | None) -> None:
    """Rescue jobs whose worker stopped sending heartbeats (a host that died).

    Also prunes, from the process table of `skiplock ps`, the pools whose
    heartbeat is older than the same timeout.
    """
    from skiplock.ops.processes import prune
    from skiplock.queue_core import recover_stuck
    from skiplock.queue_core.config import STUCK_TIMEOUT_MIN_HEARTBEATS

    settings = load_settings()
    timeout = settings.effective_stuck_timeout_s if stuck_timeout is None else stuck_timeout
    # The workers' own rule (Settings.validate): a lease is judged dead only after
    # several heartbeats were missed, or live jobs are rescued and run twice.
    floor = STUCK_TIMEOUT_MIN_HEARTBEATS * settings.heartbeat_s
    if timeout < floor:
        raise click.BadParameter(
            f"{timeout:g}s is shorter than {STUCK_TIMEOUT_MIN_HEARTBEATS} heartbeats "
            f"({floor:g}s with SKIPLOCK_HEARTBEAT_S={settings.heartbeat_s:g}): live jobs "
            "would be rescued and run twice", param_hint="--stuck-timeout")
    recovered = recover_stuck(timeout)
    click.echo(f"recovered {recovered.count} jobs ({len(recovered.retried)} to retry, "
               f"{len(recovered.dead)} dead-lettered)")
    # The process table's second net, like the jobs': masters of dead hosts.
    pruned = prune(timeout)
    if pruned:
        click.echo(f"pruned {len(pruned)} pools that stopped heartbeating", err=True)


@main.command()
@click.option("--older-than", type=DURATION, default="7d", show_default=True,
              help="Delete finished jobs that finished longer ago than this.")
@click.option("--keep-dead", is_flag=True, help="Delete COMPLETED jobs only; keep dead letters.")
def cleanup(older_than: float, keep_dead: bool) -> None:
    """Delete old COMPLETED and DEAD_LETTER jobs, in small batches."""
    from skiplock.queue_core import cleanup as do_cleanup

    statuses = ("COMPLETED",) if keep_dead else ("COMPLETED", "DEAD_LETTER")
    click.echo(f"deleted {do_cleanup(older_than, statuses=statuses)} jobs")


@main.group()
def db() -> None:
    """The embedded PostgreSQL cluster (used when DATABASE_URL is not set)."""


@db.command("url")
def db_url() -> None:
    """Print the database URL in use (starting the embedded cluster if needed)."""
    from skiplock.queue_core.urls import database_url, redact

    click.echo(redact(database_url()))


@db.command("start")
def db_start() -> None:
    """Start the embedded cluster (initialising it the first time)."""
    from skiplock.queue_core.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(load_settings().home_path)
    cluster.ensure_running()
    click.echo(f"embedded cluster running in {cluster.data_dir}", err=True)


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    from skiplock.queue_core.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(load_settings().home_path)
    click.echo("stopped" if cluster.stop() else "not running", err=True)


@db.command("status")
def db_status() -> None:
    """Say whether the embedded cluster runs (exit 1 if it does not)."""
    from skiplock.queue_core.embedded import EmbeddedCluster

    cluster = EmbeddedCluster(load_settings().home_path)
    running = cluster.is_running()
    click.echo(f"embedded cluster in {cluster.data_dir}: {'running' if running else 'stopped'}")
    sys.exit(0 if running else 1)
