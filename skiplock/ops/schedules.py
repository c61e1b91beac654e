"""Recurring jobs: cron schedules that every master runs, each occurrence enqueued once.

A schedule comes from a TOML or JSON file (`SKIPLOCK_SCHEDULE_FILE`,
`skiplock worker --schedule-file`) or from code (`add(Schedule(...))` in a
handler module):

    [[schedule]]
    name = "nightly-digest"          # unique; part of every occurrence's key
    cron = "0 3 * * *"               # see skiplock.ops.cron
    timezone = "Europe/Paris"        # IANA zone of the cron's wall clock (default UTC)
    type = "SEND_DIGEST"
    payload = { kind = "nightly" }   # default {}
    priority = 0                     # optional, as for enqueue
    max_attempts = 3                 # optional
    catch_up = "6h"                  # how late a missed occurrence may still run (default 1h)

    [[schedule]]
    name = "daily-reviews"
    cron = "15 * * * *"
    type = "BACKFILL_REVIEWS"        # a job like any other: its handler finds its own work
    payload = { period = "daily" }

Every master runs every schedule (no leader to elect, nothing to fail over):
each occurrence is enqueued with the idempotency key
`schedule:{name}:{occurrence in UTC}`, so however many masters see it, one
job exists. "WorkerSchedule" remembers the last occurrence enqueued; a master
that starts after an outage enqueues what was missed since then, but nothing
older than `catch_up` (a host down for a week does not fire a week of jobs).

A schedule only enqueues; the job's handler computes its own work. The
built-in BACKFILL_REVIEWS, for example, scheduled hourly with
`payload = { period = "daily" }`, enqueues each user's review once their
local day is over (`skiplock/handlers/backfill_reviews.py`).
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from skiplock.handlers.domain import periods
from skiplock.ops import sql as ops_sql
from skiplock.ops.cron import Cron
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.durations import parse_duration
from skiplock.queue_core.enqueue import check_job, enqueue_batch
from skiplock.queue_core.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidJob,
    SkiplockError,
)

log = logging.getLogger("skiplock.schedules")

DEFAULT_CATCH_UP_S = 3600.0
MAX_OCCURRENCES_PER_RUN = 1000
_KEYS = {"name", "cron", "timezone", "type", "payload", "priority", "max_attempts", "catch_up"}


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    job_type: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    priority: int = 0
    max_attempts: int = 3
    catch_up_s: float = DEFAULT_CATCH_UP_S

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError("a schedule needs a name")
        Cron.parse(self.cron)
        try:
            periods.load_timezone(self.timezone)
        except ValueError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        if not self.job_type:
            raise ConfigurationError(f"{where}: needs a job type (type = ...)")
        if not isinstance(self.payload, Mapping):
            raise ConfigurationError(f"{where}: payload must be a table/object")
        if self.catch_up_s < 0:
            raise ConfigurationError(f"{where}: catch_up must not be negative")
        # Each occurrence is an enqueue: check it as one now, so that a wrong
        # payload or option stops the worker at start instead of failing at
        # every occurrence.
        try:
            check_job(self.job(datetime(2000, 1, 1, tzinfo=UTC)))
        except InvalidJob as exc:
            raise ConfigurationError(f"{where}: {exc}") from None

    @property
    def parsed(self) -> Cron:
        return Cron.parse(self.cron)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def key(self, occurrence: datetime) -> str:
        return f"schedule:{self.name}:{occurrence.astimezone(UTC):%Y-%m-%dT%H:%MZ}"

    def job(self, occurrence: datetime) -> dict[str, Any]:
        """The job of one occurrence."""
        return {"type": self.job_type, "payload": dict(self.payload), "priority": self.priority,
                "max_attempts": self.max_attempts, "idempotency_key": self.key(occurrence)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cron": self.cron, "timezone": self.timezone,
                "type": self.job_type, "payload": dict(self.payload),
                "catchUpSeconds": self.catch_up_s}


_in_code: dict[str, Schedule] = {}


def add(schedule: Schedule) -> Schedule:
    """Declare a schedule in code (e.g. in a handler module); a file entry of that name wins."""
    _in_code[schedule.name] = schedule
    return schedule


def _from_entry(entry: Any, index: int) -> Schedule:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"schedule #{index + 1} is not a table/object")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigurationError(
            f"schedule #{index + 1} ({entry.get('name', '?')}): unknown keys "
            f"{', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})")
    try:
        catch_up = parse_duration(entry.get("catch_up", DEFAULT_CATCH_UP_S))
    except SkiplockError as exc:
        raise ConfigurationError(f"schedule {entry.get('name')!r}: catch_up: {exc}") from None
    return Schedule(
        name=entry.get("name", ""), cron=str(entry.get("cron", "")),
        job_type=entry.get("type", ""), payload=entry.get("payload", {}),
        timezone=entry.get("timezone", "UTC"), priority=entry.get("priority", 0),
        max_attempts=entry.get("max_attempts", 3), catch_up_s=catch_up)


def load_file(path: str | Path) -> list[Schedule]:
    """Schedules from a TOML (`[[schedule]]` tables) or JSON (`{"schedule": [...]}` or a list) file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read schedule file {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data: Any = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"schedule file {path} does not parse: {exc}") from None
    entries = data.get("schedule", []) if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise ConfigurationError(f"schedule file {path}: expected a list of schedules")
    found = [_from_entry(entry, i) for i, entry in enumerate(entries)]
    names = [s.name for s in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"schedule file {path}: duplicate names {', '.join(duplicates)}")
    return found


def load(path: str | Path | None) -> list[Schedule]:
    """The file's schedules, then those declared in code under other names."""
    found = load_file(path) if path else []
    names = {s.name for s in found}
    return found + [s for name, s in sorted(_in_code.items()) if name not in names]


# -- running them -----------------------------------------------------------------------


@dataclass
class RunResult:
    enqueued: dict[str, list[datetime]] = field(default_factory=dict)  # name -> occurrences
    created: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # name -> why, this time


def run_due(schedules: Iterable[Schedule], now: datetime | None = None) -> RunResult:
    """Enqueue every occurrence due since each schedule's cursor (bounded by its catch-up).

    Safe to call from many masters at once: the occurrence keys decide which
    insert wins, and the cursor only moves forward.
    """
    schedules = list(schedules)
    result = RunResult()
    if not schedules:
        return result
    with connect() as c:
        now = now or c.execute(ops_sql.DB_NOW).scalar_one()
        cursors = {r.name: r.lastOccurrence for r in c.execute(
            ops_sql.SCHEDULE_CURSORS, {"names": [s.name for s in schedules]})}
        for s in schedules:
            if s.name not in cursors:  # first sight: start from now, fire nothing old
                c.execute(ops_sql.START_SCHEDULE, {"name": s.name, "at": now})
                cursors[s.name] = now
    for s in schedules:
        # One entry that fails (a database rule refuses its job, say) is logged by
        # name every time and retried at the next check; the others still run.
        # An unreachable database stops them all: the caller backs off.
        try:
            _run_one(s, cursors[s.name], now, result)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            result.failed[s.name] = _one_line(exc)
            log.error("schedule %s: could not enqueue its due occurrences: %s", s.name,
                      result.failed[s.name], extra={"schedule": s.name, "job_type": s.job_type})
    return result


def _one_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _run_one(s: Schedule, cursor: datetime, now: datetime, result: RunResult) -> None:
    """Enqueue one schedule's due occurrences and move its cursor, in one transaction."""
    since = max(cursor, now - timedelta(seconds=s.catch_up_s))
    due = s.parsed.between(since, now, s.zone)[-MAX_OCCURRENCES_PER_RUN:]
    if not due:
        return
    first = s.parsed.next_after(cursor, s.zone)
    if first is not None and first <= since:
        log.warning("schedule %s: occurrences before %s are older than its catch-up "
                    "window (%.0f s) and were skipped", s.name, since.isoformat(),
                    s.catch_up_s, extra={"schedule": s.name})
    with connect() as c:
        done = enqueue_batch([s.job(o) for o in due], conn=c)
        c.execute(ops_sql.ADVANCE_SCHEDULE, {"name": s.name, "at": due[-1]})
    result.enqueued[s.name] = due
    result.created += done.created
    if done.created:
        log.info("schedule %s: enqueued %d occurrence(s), last %s", s.name, done.created,
                 due[-1].isoformat(), extra={"schedule": s.name, "job_type": s.job_type})


def cursors(names: Iterable[str]) -> dict[str, datetime]:
    with connect() as c:
        return {r.name: r.lastOccurrence for r in c.execute(
            ops_sql.SCHEDULE_CURSORS, {"names": list(names)})}
