"""Backfills: enqueue the work the domain is missing, in batches, safe to rerun.

Every job carries the original service's idempotency key (`interpret:{eventId}`,
`review:{userId}:{type}:{periodKey}`), and each batch is one `enqueue_batch`
in its own transaction. A backfill interrupted after any batch and run again
skips what is already queued (the unique key decides, in SQL) and adds the
rest: nothing twice.

Candidates are read by keyset pagination (`id > last id seen`), so a batch
costs the same at the end of a big table as at its start, and no long
transaction pins the vacuum horizon while a million jobs are written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from skiplock.handlers.domain import sql as domain_sql
from skiplock.handlers.domain.periods import load_timezone
from skiplock.queue_core import payloads, sql
from skiplock.queue_core.database import migrate
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.enqueue import enqueue_batch
from skiplock.queue_core.errors import ConfigurationError, InvalidJob

log = logging.getLogger("skiplock.backfill")

DEFAULT_BATCH_SIZE = 1000
PERIODS = {"daily": "DAILY", "weekly": "WEEKLY", "monthly": "MONTHLY"}

Progress = Callable[[int], None]  # called with the number of candidates just handled


@dataclass
class Outcome:
    candidates: int = 0  # jobs the backfill wanted to exist
    created: int = 0  # of which this run wrote
    already_queued: int = 0  # of which a job with the key already existed
    skipped: list[str] = field(default_factory=list)  # problems that left some out
    not_over: int = 0  # periods left out because they have not ended in the user's zone
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "created": self.created,
                "alreadyQueued": self.already_queued, "skipped": len(self.skipped),
                "skippedReasons": self.skipped[:20], "notOverYet": self.not_over,
                "dryRun": self.dry_run}


def require_demo() -> None:
    """The backfills read the demo domain's tables: say so in one line where it is missing."""
    with connect() as c:
        if not migrate.demo_installed(c):
            raise ConfigurationError(
                "the backfills read the built-in handlers' demo domain (\"Event\", \"User\"), "
                "which this database does not have: `skiplock migrate --demo` installs it")


def _check_batch_size(batch_size: int) -> None:
    if not 1 <= batch_size <= 100_000:
        raise InvalidJob(f"batch size must be between 1 and 100000, not {batch_size}")


def _flush(jobs: list[dict[str, Any]], outcome: Outcome, dry_run: bool,
           progress: Progress | None) -> None:
    if not jobs:
        return
    outcome.candidates += len(jobs)
    if dry_run:
        keys = [job["idempotency_key"] for job in jobs]
        with connect() as c:
            existing = len(c.execute(sql.EXISTING_BY_KEY, {"keys": keys}).fetchall())
        outcome.already_queued += existing
    else:
        done = enqueue_batch(jobs)
        outcome.created += done.created
        outcome.already_queued += len(jobs) - done.created
    if progress:
        progress(len(jobs))
    jobs.clear()


# -- events without an interpretation ------------------------------------------------


def _interpret_filters(user_id: str | None, since: datetime | None,
                       until: datetime | None) -> tuple[str, dict[str, Any]]:
    params = {"user_id": user_id, "since": since, "until": until}
    clauses = " ".join(c for name, c in domain_sql.INTERPRET_FILTERS.items() if params[name] is not None)
    return clauses, {k: v for k, v in params.items() if v is not None}


def count_interpret(user_id: str | None = None, since: datetime | None = None,
                    until: datetime | None = None) -> tuple[int, int]:
    """(events without an interpretation, of which already queued)."""
    clauses, params = _interpret_filters(user_id, since, until)
    with connect() as c:
        row = c.execute(text(domain_sql.COUNT_INTERPRET_CANDIDATES.format(filters=clauses)),
                        params).one()
    return int(row.n), int(row.queued)


def backfill_interpret(*, user_id: str | None = None, since: datetime | None = None,
                       until: datetime | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                       dry_run: bool = False, progress: Progress | None = None) -> Outcome:
    """INTERPRET_EVENT for every event (of `user_id`, that happened in [since, until))
    that has no interpretation yet."""
    _check_batch_size(batch_size)
    clauses, params = _interpret_filters(user_id, since, until)
    statement = text(domain_sql.INTERPRET_CANDIDATES.format(filters=clauses))
    outcome = Outcome(dry_run=dry_run)
    after = ""
    while True:
        with connect() as c:
            rows = c.execute(statement, {**params, "after": after, "batch": batch_size}).fetchall()
        if not rows:
            break
        jobs = [{"type": payloads.INTERPRET_EVENT, "payload": {"eventId": r.id},
                 "idempotency_key": f"interpret:{r.id}", "user_id": r.userId} for r in rows]
        _flush(jobs, outcome, dry_run, progress)
        after = rows[-1].id
        if len(rows) < batch_size:
            break
    log.info("backfill interpret: %d candidates, %d created, %d already queued",
             outcome.candidates, outcome.created, outcome.already_queued)
    return outcome


# -- reviews per user and period ---------------------------------------------------------


@dataclass(frozen=True)
class Period:
    key: str
    first: date
    end: date  # the day after the last day: the period ends at its local midnight


def periods(period: str, first: date, last: date) -> list[Period]:
    """The daily, weekly (ISO) or monthly periods that contain a day of [first, last]."""
    if period not in PERIODS:
        raise InvalidJob(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    if last < first:
        raise InvalidJob(f"--to ({last}) is before --from ({first})")
    found: list[Period] = []
    if period == "daily":
        day = first
        while day <= last:
            found.append(Period(day.isoformat(), day, day + timedelta(days=1)))
            day += timedelta(days=1)
    elif period == "weekly":
        monday = first - timedelta(days=first.weekday())
        while monday <= last:
            year, week, _ = monday.isocalendar()
            found.append(Period(f"{year}-W{week:02d}", monday, monday + timedelta(days=7)))
            monday += timedelta(days=7)
    else:
        month = first.replace(day=1)
        while month <= last:
            following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
            found.append(Period(f"{month.year}-{month.month:02d}", month, following))
            month = following
    return found


def _users(user_id: str | None, batch: int = 1000) -> Iterator[Any]:
    clauses = domain_sql.USER_FILTERS["user_id"] if user_id else ""
    statement = text(domain_sql.USERS_BATCH.format(filters=clauses))
    after = ""
    while True:
        with connect() as c:
            rows = c.execute(statement, {"after": after, "batch": batch,
                                         "user_id": user_id}).fetchall()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].id


def count_users(user_id: str | None = None) -> int:
    clauses = domain_sql.USER_FILTERS["user_id"] if user_id else ""
    with connect() as c:
        return int(c.execute(text(domain_sql.COUNT_USERS.format(filters=clauses)),
                             {"user_id": user_id}).scalar_one())


def db_now() -> datetime:
    with connect() as c:
        now: datetime = c.execute(domain_sql.DB_NOW).scalar_one()
    return now


def backfill_reviews(period: str, first: date, last: date, *, user_id: str | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False,
                     progress: Progress | None = None, now: datetime | None = None) -> Outcome:
    """GENERATE_REVIEW for every user and every `period` that overlaps [first, last]
    and has ended in the user's time zone.

    A period still running in the user's time zone is left out: its review
    would be incomplete, and its key would keep the real one from ever being
    enqueued.
    """
    _check_batch_size(batch_size)
    wanted = periods(period, first, last)
    review_type = PERIODS[period]
    now = now or db_now()
    outcome = Outcome(dry_run=dry_run)
    jobs: list[dict[str, Any]] = []
    for user in _users(user_id):
        try:
            zone = load_timezone(user.timezone)
        except ValueError as exc:
            outcome.skipped.append(f"user {user.id}: {exc}")
            if progress:
                progress(len(wanted))
            continue
        unfinished = 0
        for p in wanted:
            if _local_midnight(p.end, zone) > now:
                unfinished += 1
                continue
            jobs.append({"type": payloads.GENERATE_REVIEW,
                         "payload": {"userId": user.id, "type": review_type,
                                     "periodKey": p.key, "timezone": user.timezone},
                         "idempotency_key": f"review:{user.id}:{review_type}:{p.key}",
                         "user_id": user.id})
            if len(jobs) >= batch_size:
                _flush(jobs, outcome, dry_run, progress)
        if unfinished:
            outcome.not_over += unfinished
            if progress:
                progress(unfinished)
    _flush(jobs, outcome, dry_run, progress)
    log.info("backfill reviews: %d candidates, %d created, %d already queued",
             outcome.candidates, outcome.created, outcome.already_queued)
    return outcome


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)
