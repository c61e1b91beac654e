"""`skiplock policy show|set|reset`: the per-type policies in the database
(queue_core/features/type_policies.py)."""

from __future__ import annotations

import getpass
import socket
from typing import Any

import click

from skiplock.cli.app import DURATION, main, print_json
from skiplock.cli.display import safe


@main.group()
def policy() -> None:
    """Per-type defaults that apply to jobs from every producer.

    A job type's concurrency limit, max attempts, backoff, unique window and
    rate live in the table "WorkerTypePolicy". Each pool writes its handlers'
    @handler(...) options there when it starts (and on HUP); an operator's
    `skiplock policy set` overrides them, and a pool's start never changes an
    operator's values: they hold until `skiplock policy reset`. The job
    table's insert trigger applies the policy to every new job that leaves a
    value unset, whoever wrote it: skiplock.enqueue, the seed's Prisma
    client, psql, another language. Values a job carries win.

    \b
      skiplock policy show
      skiplock policy set DETECT_PATTERNS --concurrency 1 --key-field userId
      skiplock policy reset DETECT_PATTERNS
    """


def _row(p: Any) -> dict[str, Any]:
    return {"type": p.type, **p.values, "source": p.source,
            "updatedAt": p.updated_at.isoformat() if p.updated_at else None,
            "updatedBy": p.updated_by}


@policy.command("show")
@click.argument("job_type", metavar="[TYPE]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the policies as a JSON array.")
def policy_show(job_type: str | None, as_json: bool) -> None:
    """Show the policy of TYPE, or of every type that has one.

    Each policy says where its values came from: `boot` (a pool's handlers,
    with the pool's id) or `operator` (`skiplock policy set`), and when.
    Exit status 1 if TYPE has no policy."""
    from skiplock.queue_core.features.type_policies import describe, type_policies

    found = type_policies(job_type)
    if as_json:
        print_json([_row(p) for p in found])
    elif not found:
        click.echo("no job type has a policy" if job_type is None
                   else f"{safe(job_type)} has no policy", err=job_type is not None)
    for p in found if not as_json else ():
        when = p.updated_at.isoformat(timespec="seconds") if p.updated_at else "?"
        click.echo(f"{safe(p.type)}  (set by {p.source} {safe(p.updated_by or '?')}, {when})")
        for line in describe(p.values) or ["(no values)"]:
            click.echo(f"  {safe(line)}")
    if job_type is not None and not found:
        raise SystemExit(1)


def _backoff(value: str) -> float | list[float]:
    try:
        delays = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{safe(value)} is not seconds or a comma-separated list "
                                 "of seconds") from None
    return delays[0] if len(delays) == 1 else delays


@policy.command("set")
@click.argument("job_type", metavar="TYPE")
@click.option("--concurrency", type=int, default=None,
              help="At most N jobs at once per key, on every host (1 to 10000).")
@click.option("--key-field", default=None,
              help="The payload field whose value keys the limit: key TYPE:<value>. Without "
                   "one the limit is for the whole type; a job whose payload lacks the "
                   "field is not limited.")
@click.option("--max-attempts", type=int, default=None,
              help="Tries before a job is dead-lettered (1 to 1000), for jobs that do not "
                   "say (from Prisma or psql, a maxAttempts of 3, the column's default, "
                   "counts as not saying).")
@click.option("--backoff", default=None, metavar="SECONDS[,SECONDS...]",
              help="Delay before the next try: one number of seconds, or a list (the n-th "
                   "failure waits the n-th delay; the last one repeats), e.g. 1,5,30.")
@click.option("--unique-for", default=None, metavar="DURATION|active",
              help="An idempotency key keeps a second job of that key out for this long "
                   "after the enqueue (60, 10m, 1h), or while the job is pending or running "
                   "(active).")
@click.option("--rate", default=None, metavar="COUNT/PERIOD",
              help="At most COUNT jobs start per period, per key: 10/s, 10/m, 100/h, 5/30s.")
@click.option("--rate-key-field", default=None,
              help="The payload field whose value keys the rate (TYPE:<value>); without one "
                   "the rate is for the whole type.")
@click.option("--clear", "clear", multiple=True, metavar="FIELD",
              type=click.Choice(["concurrency", "key-field", "max-attempts", "backoff",
                                 "unique-for", "rate", "rate-key-field"]),
              help="Remove this value from the policy (repeatable).")
@click.option("--by", default=None, help="Who sets it (default: user@host of this shell).")
def policy_set(job_type: str, concurrency: int | None, key_field: str | None,
               max_attempts: int | None, backoff: str | None, unique_for: str | None,
               rate: str | None, rate_key_field: str | None, clear: tuple[str, ...],
               by: str | None) -> None:
    """Set TYPE's policy; the values not given stay as they are.

    The policy becomes the operator's: a pool's start no longer changes it
    (`skiplock policy reset TYPE` gives it back to the pools). It applies to
    jobs inserted from now on; jobs already queued keep what they have.
    Where a process that registered TYPE enqueues with skiplock.enqueue, its
    registration applies there as before. A key or a backoff given as a Python
    function cannot be stored: it applies only where Python enqueues (or in
    the workers).

    \b
      skiplock policy set DETECT_PATTERNS --concurrency 2 --key-field userId
      skiplock policy set SEND_EMAIL --rate 10/m --rate-key-field userId
      skiplock policy set SEND_EMAIL --max-attempts 8 --backoff 1,5,30,300
      skiplock policy set SEND_EMAIL --clear rate --clear rate-key-field
    """
    from skiplock.queue_core.features.type_policies import describe, set_type_policy

    values: dict[str, Any] = {}
    given = {"concurrencyLimit": concurrency, "concurrencyKeyField": key_field,
             "maxAttempts": max_attempts,
             "backoff": None if backoff is None else _backoff(backoff),
             "uniqueFor": None if unique_for is None
             else unique_for if unique_for == "active" else DURATION.convert(unique_for, None,
                                                                              None),
             "rate": rate, "rateKeyField": rate_key_field}
    values = {k: v for k, v in given.items() if v is not None}
    names = {"concurrency": "concurrencyLimit", "key-field": "concurrencyKeyField",
             "max-attempts": "maxAttempts", "backoff": "backoff", "unique-for": "uniqueFor",
             "rate": "rate", "rate-key-field": "rateKeyField"}
    for flag in clear:
        if names[flag] in values:
            raise click.UsageError(f"--{flag} and --clear {flag} contradict each other")
        values[names[flag]] = None
    if not values:
        raise click.UsageError("give at least one value to set (or --clear FIELD)")
    who = by or f"{getpass.getuser()}@{socket.gethostname()}"
    done = set_type_policy(job_type, values, who)
    click.echo(f"{safe(done.type)}: policy set by {safe(who)}")
    for line in describe(done.values):
        click.echo(f"  {safe(line)}")


@policy.command("reset")
@click.argument("job_type", metavar="TYPE")
def policy_reset(job_type: str) -> None:
    """Delete TYPE's policy, an operator's or a pool's.

    The next pool that serves TYPE writes its handlers' options again when it
    starts (or on HUP); until then new jobs of TYPE get no policy from the
    database. Exit status 1 if TYPE had none."""
    from skiplock.queue_core.features.type_policies import reset_type_policy

    source = reset_type_policy(job_type)
    if source is None:
        click.echo(f"{safe(job_type)} has no policy", err=True)
        raise SystemExit(1)
    click.echo(f"{safe(job_type)}: the {source} policy is deleted; the next pool that serves "
               "it writes its handlers' options when it starts (or on HUP)")
