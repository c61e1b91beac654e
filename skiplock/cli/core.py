"""Core commands: migrate, enqueue, job, retry, recover, cleanup, db (`stats` is in ops.py)."""

from __future__ import annotations

import json
import sys

import click

from skiplock.cli.app import DURATION, main, print_json
from skiplock.cli.display import echo, safe
from skiplock.queue_core.config import load_settings
from skiplock.queue_core.errors import InvalidPayload, JobNotFound, UnknownJobType


@main.command()
@click.option("--demo", is_flag=True,
              help="Also install the demo domain that the built-in handlers of the six seed job "
                   "types work on (\"User\", \"Event\", \"Interpretation\", ...). Refused, "
                   "changing nothing, in a database that has a table of one of those names.")
@click.option("--sql", "as_sql", is_flag=True,
              help="Print the DDL that `migrate` would run, and change nothing (no database "
                   "needed): for a team that keeps every schema change in its own migrations "
                   "(Prisma, Django, alembic). It ends by recording the revision in "
                   "skiplock_version, so `--check` works on a database set up that way.")
@click.option("--from", "from_revision", metavar="REVISION|prisma", default=None,
              help="With --sql: only the DDL after this revision (the one your database is at, "
                   "as `--check` prints it), or `prisma`: the upgrade of a \"WorkerJob\" that "
                   "Prisma made from the seed's models. Default: from an empty database.")
@click.option("--check", is_flag=True,
              help="Change nothing; exit 0 when the database is at the latest revision, 1 with "
                   "one line when it is not (for deploy scripts and readiness checks).")
def migrate(demo: bool, as_sql: bool, from_revision: str | None, check: bool) -> None:
    """Create or upgrade skiplock's own tables to the latest schema.

    Creates the job table and the few tables beside it (docs/schema.md lists
    every object), and no other: an application's own tables are never
    touched. A "WorkerJob" that Prisma made from the seed's models is adopted
    in place, its rows kept. Safe to run on every deploy and from several hosts
    at once: migrations take an advisory lock, run in one transaction, and
    leave a database that is up to date alone.
    """
    from skiplock.queue_core.database import migrate as migrations
    from skiplock.queue_core.database.urls import database_url, redact

    if from_revision and not as_sql:
        raise click.UsageError("--from goes with --sql")
    if as_sql and check:
        raise click.UsageError("--sql and --check do not go together")
    if as_sql:
        click.echo(migrations.upgrade_sql(from_revision, demo=demo), nl=False)
        return
    # --check changes nothing: it reads a database that exists, and starts none.
    url = database_url(start=not check)
    if check:
        current = migrations.current_revisions(url)
        missing = migrations.behind(current)
        if missing:
            click.echo(f"skiplock: database {redact(url)} is at revision "
                       f"{', '.join(current) or 'none'}, not {', '.join(missing)}: "
                       "run `skiplock migrate`", err=True)
            sys.exit(1)
        click.echo(f"database {redact(url)} is at the latest revision {', '.join(current)}",
                   err=True)
        return
    done = migrations.upgrade(url, demo=demo)
    for note in done.notes:
        click.echo(note, err=True)
    if done.before == done.after:
        click.echo(f"database {redact(url)} is already at revision {', '.join(done.after)}",
                   err=True)
    else:
        click.echo(f"database {redact(url)} is at revision {', '.join(done.after)} "
                   f"(was {', '.join(done.before) or 'empty'})", err=True)


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
@click.option("--concurrency-key", default=None, metavar="KEY",
              help="At most --concurrency jobs of KEY run at once, on every host.")
@click.option("--concurrency", type=int, default=None, metavar="N",
              help="With --concurrency-key: the key's limit (default: the type's).")
@click.option("--unique-for", default=None, metavar="WINDOW",
              help="With --key: how long the key holds: 'active' (while pending or running) "
                   "or a period such as 1h (default: as long as the job exists).")
@click.option("--debounce", type=DURATION, default=None,
              help="With --debounce-key: one pending job per type and key; an enqueue while "
                   "it waits moves it to now + this (30s, 5m) and prints its id.")
@click.option("--debounce-key", default=None, metavar="KEY",
              help="The key of --debounce.")
@click.option("--debounce-mode", type=click.Choice(["delay", "replace"]), default=None,
              help="delay: the pending job keeps its payload (default); replace: it takes "
                   "this one.")
@click.option("--max-attempts", type=int, default=None,
              help="Attempts before the job is dead-lettered (default: the type's, else 3).")
@click.option("--sequence", default=None, metavar="KEY",
              help="Jobs of KEY run one at a time, in the order they were enqueued.")
@click.option("--on-sequence-failure", type=click.Choice(["hold", "pass"]), default=None,
              help="With --sequence: dead-lettered, this job holds the rest of KEY until it "
                   "is retried or deleted (hold, the default) or lets them go on (pass).")
@click.option("--user-id", default=None, help="The user the job belongs to.")
@click.option("--handlers", "handler_modules", multiple=True, metavar="MODULE",
              help="Import MODULE so that its job types, and their payload models, limits "
                   "and retry policy, are known (repeatable).")
@click.option("--any-type", is_flag=True,
              help="Accept a type no handler here knows (one served by another deployment): "
                   "the job waits, PENDING, until a pool that serves its type runs.")
@click.option("--wait", "wait_", is_flag=True,
              help="Wait for the job to finish; print its result (exit 0) or its error (exit 1).")
@click.option("--timeout", type=DURATION, default=None,
              help="With --wait: give up after this long (exit 1; the job goes on).")
def enqueue(job_type: str, payload: str, priority: int, delay: float | None,
            idempotency_key: str | None, max_attempts: int | None, user_id: str | None,
            handler_modules: tuple[str, ...], any_type: bool, wait_: bool,
            timeout: float | None, unique_for: str | None, concurrency_key: str | None,
            concurrency: int | None, debounce: float | None, debounce_key: str | None,
            debounce_mode: str | None, sequence: str | None = None,
            on_sequence_failure: str | None = None) -> None:
    """Add a job of TYPE with the JSON object PAYLOAD ('-' reads it from stdin).

    Prints the job id alone on stdout. With --wait, prints the id on stderr,
    waits until a worker finishes the job, then prints its result as JSON on
    stdout and exits 0, or prints its error on stderr and exits 1 (failed for
    good, or cancelled).

    A type registered with a payload model (`@handler(TYPE, payload=Model)`) has
    the payload checked against it when its module is known here (--handlers,
    SKIPLOCK_HANDLERS).

    A pool claims only the types it has handlers for (see `skiplock worker
    --types`): a job of a type that no running pool serves waits until one
    does, and `skiplock stats` shows it as NO POOL.

    \b
      skiplock enqueue INTERPRET_EVENT '{"eventId": "evt_1"}'
      skiplock enqueue GENERATE_REVIEW @review.json --delay 5m
    """
    from skiplock.queue_core import enqueue as do_enqueue

    if payload == "-":
        try:
            payload = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidPayload(f"payload on stdin is not UTF-8 text: {exc.reason}") from None
    elif payload.startswith("@"):
        try:
            with open(payload[1:], encoding="utf-8") as handle:
                payload = handle.read()
        except OSError as exc:
            raise InvalidPayload(
                f"cannot read payload file {payload[1:]!r}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError as exc:
            raise InvalidPayload(
                f"payload file {payload[1:]!r} is not UTF-8 text: {exc.reason}") from None
    try:
        data = json.loads(payload)
    except RecursionError:
        raise InvalidPayload("payload is not valid JSON: nested far too deep") from None
    except ValueError as exc:  # also an integer of thousands of digits
        raise InvalidPayload(f"payload is not valid JSON: {exc}") from None
    if not any_type:
        known = _known_types(handler_modules)  # the modules register their payload models too
        if job_type not in known:
            raise UnknownJobType(
                f"unknown job type {job_type!r} (known: {', '.join(known)}; "
                "--handlers MODULE adds more, --any-type skips this check)"
            )
    elif handler_modules:  # a typed type's model checks the payload
        _known_types(handler_modules)
    job_id = do_enqueue(job_type, data, priority=priority, delay=delay,
                        max_attempts=max_attempts, idempotency_key=idempotency_key,
                        user_id=user_id, unique_for=unique_for,
                        concurrency_key=concurrency_key, concurrency=concurrency,
                        debounce=debounce, debounce_key=debounce_key,
                        debounce_mode=debounce_mode,
                        sequence=sequence, on_sequence_failure=on_sequence_failure)
    if not wait_:
        if timeout is not None:
            raise click.UsageError("--timeout goes with --wait")
        click.echo(job_id)
        return
    from skiplock.cli.features import wait_and_report

    click.echo(job_id, err=True)
    wait_and_report(job_id, timeout)


# Columns of the job features (cancel, limits, unique windows, progress, snooze,
# checkpoints): shown only when set, so that an ordinary job reads as it always did.
_UNSET_HIDDEN = frozenset({"cancelRequestedAt", "cancelledBy", "concurrencyKey",
                           "concurrencyLimit", "heldBack", "uniqueKey", "uniqueUntil",
                           "progress", "progressMessage", "snoozes", "checkpoint",
                           "traceContext", "rate", "rateKey"})


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the row as JSON.")
def job(job_id: str, as_json: bool) -> None:
    """Show everything about one job, its last error in full.

    For a pending job that cannot be claimed now, why: waiting for a slot of
    its concurrency key (how many of how many are taken), parked (no live
    pool serves its type), waiting for its parents, not due until a time, or
    its type paused."""
    from skiplock.queue_core import get_job
    from skiplock.queue_core.features.why import explain

    found = get_job(job_id)
    if found is None:
        raise JobNotFound(f"no job with id {safe(job_id)!r}")
    row = found.to_dict()
    why = explain(job_id) if found.status == "PENDING" else []
    if as_json:
        print_json({**row, "waitingBecause": why} if why else row)
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        if key in ("payload", "result", "checkpoint", "traceContext") and value is not None:
            value = json.dumps(value, ensure_ascii=False)
        if key == "lastError" or (value is None and key in _UNSET_HIDDEN):
            continue
        echo(f"{key:<{width}}  {'' if value is None else value}")
    if why:
        echo("\nwaiting, not claimable now:")
        for sentence in why:
            echo(f"  {safe(sentence)}")
    _graph(job_id)
    if found.last_error:
        echo(f"\nlastError:\n{found.last_error}", lines=True)


def _graph(job_id: str) -> None:
    """A job's parents, dependents and batch, when it has some (dependencies.py)."""
    from skiplock.queue_core.features.batches import batch_of
    from skiplock.queue_core.features.dependencies import dependents, parents

    ups, downs = parents(job_id), dependents(job_id, limit=20)
    for title, edges in (("parents", ups), ("dependents", downs)):
        if edges:
            echo(f"\n{title}:")
            for e in edges:
                echo(f"  {e.id}  {e.type or '(deleted)'}  {e.status or ''}  policy {e.policy}")
    found = batch_of(job_id) if ups or downs else None
    if found:
        echo(f"\nbatch: {found} (skiplock batch {found})")


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
@click.option("--all-dead", is_flag=True, help="Retry every dead-lettered job.")
@click.option("--type", "job_type", default=None,
              help="With --all-dead: only jobs of this type.")
@click.option("--from-start", is_flag=True,
              help="Drop the jobs' checkpoints: they run from the start instead of "
                   "resuming (skiplock.last_checkpoint() gives None).")
def retry(job_ids: tuple[str, ...], all_dead: bool, job_type: str | None,
          from_start: bool) -> None:
    """Move dead-lettered jobs back to PENDING with fresh attempts.

    Given ids, cancelled jobs (FAILED) are retried too; --all-dead moves dead
    letters only. A job resumes from its checkpoint unless --from-start."""
    from skiplock.queue_core import retry_dead

    if bool(job_ids) == all_dead:
        raise click.UsageError("give job ids, or --all-dead (not both)")
    if job_type and not all_dead:
        raise click.UsageError("--type goes with --all-dead")
    if job_ids:
        retried = retry_dead(job_ids, from_start=from_start)
        missing = sorted(set(job_ids) - set(retried))
        if missing:
            echo(f"not dead-lettered (left alone): {', '.join(missing)}", err=True)
    elif job_type:
        retried = retry_dead(job_type=job_type, from_start=from_start)
    else:
        retried = retry_dead(all_dead=True, from_start=from_start)
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
              help="Forget finished jobs that finished longer ago than this. In history, "
                   "whole partitions go (a day each unless skiplock.history_width says "
                   "otherwise): rounded up to the partition, a job stays up to a day longer.")
@click.option("--keep-dead", is_flag=True,
              help="Keep dead letters; delete COMPLETED and cancelled (FAILED) jobs only "
                   "(a history partition that holds a dead letter is kept whole).")
def cleanup(older_than: float, keep_dead: bool) -> None:
    """Forget old COMPLETED, DEAD_LETTER and cancelled (FAILED) jobs.

    Moves finished jobs to history (as `history move`), drops the history partitions
    older than --older-than (DETACH ... CONCURRENTLY: the queue goes on), makes the
    partitions ahead, ANALYZEs the history, and deletes in small batches what old
    finished jobs are still live. Then repairs the slot counts of concurrency keys (as
    `recount-slots`), and forgets rate keys that no job has used for an hour and
    whose window is over."""
    from skiplock.queue_core import cleanup as do_cleanup

    statuses = ("COMPLETED", "FAILED") if keep_dead else ("COMPLETED", "DEAD_LETTER", "FAILED")
    report: list[str] = []
    deleted = do_cleanup(older_than, statuses=statuses, report=report)
    for line in report:
        click.echo(line, err=True)
    click.echo(f"deleted {deleted} jobs")


@main.command("recount-slots")
def recount_slots() -> None:
    """Repair the slot counts of concurrency keys, and let held-back jobs in.

    The triggers keep them right; this repairs what bypassed the triggers
    (they were disabled, "WorkerConcurrencyKey" was edited by hand). `cleanup`
    runs it too."""
    from skiplock.queue_core.features.limits import recount_slots as recount

    fixed = recount()
    click.echo(f"corrected the slot counts of {fixed} concurrency key{'' if fixed == 1 else 's'}")


@main.command()
@click.argument("key")
@click.argument("weight", type=click.IntRange(1, 1000), required=False)
@click.option("--reset", is_flag=True, help="Forget the key's weight: it weighs 1 again.")
def weight(key: str, weight: int | None, reset: bool) -> None:
    """Set the weight of fair key KEY (1 to 1000), or show it without WEIGHT.

    Under contention, keys share the workers in proportion to their weights:
    a key keeps weight x `skiplock.fair_window` (10 unless set) of its jobs in
    the queue at once, the rest wait their turn (docs/jobs.md, "Fairness")."""
    from skiplock.queue_core.features import fairness

    if weight is not None and reset:
        raise click.UsageError("give a WEIGHT or --reset, not both")
    if weight is not None or reset:
        let_in = fairness.set_weight(key, None if reset else weight)
        click.echo(f"{key}: weight {weight or 1}" + (f", {let_in} more jobs let in"
                                                     if let_in else ""))
        return
    found = fairness.fair_keys(limit=1, key=key)
    if not found:
        click.echo(f"{key}: weight 1, no pending jobs")
        return
    k = found[0]
    click.echo(f"{key}: weight {k.weight}, {k.admitted}/{k.window} in the queue, "
               f"{k.waiting} waiting their turn")


@main.group()
def db() -> None:
    """The embedded PostgreSQL cluster (used when DATABASE_URL is not set)."""


@db.command("url")
@click.option("--show-password", is_flag=True,
              help="Print the password too (it is masked otherwise).")
def db_url(show_password: bool) -> None:
    """Print the database URL in use (the embedded cluster's only if it runs).

    The password is masked as *** unless --show-password is given.
    """
    from skiplock.queue_core.database.urls import database_url, redact

    url = database_url()
    click.echo(url if show_password else redact(url))


@db.command("start")
def db_start() -> None:
    """Start the embedded cluster (initialising it the first time).

    With the default SKIPLOCK_HOME, a cluster that an earlier skiplock made in
    ./.skiplock is moved to it (stopped, renamed, started; its data kept).
    """
    from skiplock.queue_core.database import embedded

    settings = load_settings()
    said: list[str] = []
    embedded.start(settings, announce=said.append)
    cluster = embedded.cluster_for(settings)
    click.echo(f"skiplock: {said[0]}" if said else
               f"the embedded cluster already runs in {cluster.data_dir}", err=True)


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    from skiplock.queue_core.database import embedded

    cluster = embedded.cluster_for(load_settings())
    click.echo("stopped" if cluster.stop() else "not running", err=True)


@db.command("status")
def db_status() -> None:
    """Say where the embedded cluster lives and whether it runs (exit 1 if it does not)."""
    from skiplock.queue_core.database import embedded
    from skiplock.queue_core.database.urls import redact
    from skiplock.queue_core.errors import EmbeddedDatabaseError

    settings = load_settings()
    cluster = embedded.cluster_for(settings)
    running = cluster.is_running()
    state = "running" if running else "stopped" if cluster.has_cluster() else (
        "not created yet (`skiplock db start` creates it)")
    click.echo(f"embedded cluster in {cluster.data_dir}: {state}")
    source = "SKIPLOCK_HOME" if settings.home else "default SKIPLOCK_HOME"
    click.echo(f"home ({source}): {cluster.home}")
    try:
        socket = str(cluster.socket_dir)
    except EmbeddedDatabaseError:  # a long path: a private directory is made at start
        socket = "a private directory in /tmp, made when it starts"
    click.echo(f"socket directory: {socket}\nlog: {cluster.log_file}")
    earlier = embedded.earlier_cluster(settings)
    if earlier is not None:
        click.echo(f"an earlier skiplock's cluster is in {earlier.data_dir} ("
                   f"{'running' if earlier.is_running() else 'stopped'}): " + (
                       "not used" if cluster.has_cluster() else
                       "`skiplock db start` here moves it to the data directory above"))
    if settings.database_url:
        click.echo(f"DATABASE_URL is set: commands use {redact(settings.database_url)}, "
                   "not this cluster")
    sys.exit(0 if running else 1)


@main.command("prisma-schema")
def prisma_schema() -> None:
    """Print the Prisma `enum` and `model WorkerJob` blocks that match the migrated table.

    For a team whose service writes jobs through a Prisma client: read from
    the database, after `skiplock migrate`, so every column, index, default
    and foreign key skiplock's table has is in the model, and a client
    generated from it reads and writes all of them (with the seed's `enum
    JobType`, the client refuses to read a row of any other job type). Ends
    with the lines of prisma.config.ts that keep Prisma Migrate from dropping
    what it did not make.
    """
    from skiplock.ops.prisma_schema import render
    from skiplock.queue_core.database.db import connect

    with connect() as conn:
        try:
            click.echo(render(conn), nl=False)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
