"""What each page shows, read in one read-only transaction with a time limit.

Every figure comes through the operator's existing reads where one fits
(`ops.health.collect`, `ops.processes.list_processes`, `ops.schedules`,
`queue_core.maintenance`), so the dashboard and `skiplock stats` / `ps` agree.
Nothing here counts the whole job table (see docs/lessons.md, "count(*) on a
big job table is slow"): finished jobs are the planner's estimate, listings
page by keyset through the index of their status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from skiplock.dashboard import job_page
from skiplock.dashboard.settings import DashboardSettings
from skiplock.ops import health, processes
from skiplock.ops import schedules as schedules_mod
from skiplock.ops import sql as ops_sql
from skiplock.queue_core import sql
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import batches, dependencies, why
from skiplock.queue_core.jobs import Job, JobStatus

STATUSES = tuple(s.value for s in JobStatus)


@contextmanager
def reading(settings: DashboardSettings) -> Iterator[Connection]:
    with connect() as c:
        c.execute(ops_sql.DASHBOARD_READ_ONLY)
        c.execute(ops_sql.DASHBOARD_TIMEOUT, {"ms": str(settings.read_timeout_ms)})
        yield c


# -- the overview -------------------------------------------------------------------------------


@dataclass
class Bar:
    minute: datetime
    completed: int
    dead: int


@dataclass
class Overview:
    health: health.Health
    bars: list[Bar]
    types: list[str]  # every type with pending, running or dead jobs
    read_at: datetime

    @property
    def bar_max(self) -> int:
        return max([b.completed + b.dead for b in self.bars] + [1])

    @property
    def finished_last_hour(self) -> int:
        return sum(b.completed + b.dead for b in self.bars)


def overview(settings: DashboardSettings) -> Overview:
    with reading(settings) as c:
        figures = health.collect(conn=c)
        rows = {int(r.minute): r for r in c.execute(ops_sql.THROUGHPUT_BY_MINUTE)}
        now = c.execute(ops_sql.DB_NOW).scalar_one()
    this_minute = now.replace(second=0, microsecond=0)
    bars = []
    for back in range(59, -1, -1):
        minute = this_minute - timedelta(minutes=back)
        row = rows.get(int(minute.timestamp()))
        bars.append(Bar(minute, int(row.completed) if row else 0, int(row.dead) if row else 0))
    types = sorted(set(figures.pending_by_type) | set(figures.processing_by_type)
                   | set(figures.dead_by_type) | set(figures.paused))
    return Overview(figures, bars, types, now)


# -- the job listing ----------------------------------------------------------------------------


@dataclass
class JobFilters:
    status: str | None = None
    type: str | None = None
    user_id: str | None = None
    key: str | None = None  # a prefix of the idempotency key
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, args: Any) -> JobFilters:
        """From the query string; a value that does not parse raises InvalidJob."""
        def get(name: str) -> str | None:
            value = (args.get(name) or "").strip()
            return value or None

        status = get("status")
        if status is not None:
            status = status.upper()
            if status not in STATUSES:
                raise InvalidJob(f"unknown status {status!r}")
        return cls(status=status, type=get("type"), user_id=get("user"), key=get("key"),
                   since=_parse_time(get("since"), "since"),
                   until=_parse_time(get("until"), "until"))

    def query(self) -> dict[str, str]:
        """The filters as query-string values (for the next page's link)."""
        out = {"status": self.status, "type": self.type, "user": self.user_id, "key": self.key,
               "since": _show_time(self.since), "until": _show_time(self.until)}
        return {k: v for k, v in out.items() if v}


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidJob(f"{name}: not a date and time (YYYY-MM-DDTHH:MM): {value!r}") from None
    return _in_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), name, value)


def _in_utc(value: datetime, name: str, given: str) -> datetime:
    # 0001-01-01T00:00+01:00 is a time of year 0 in UTC, 9999-12-31T23:00-02:00 one of
    # year 10000: neither is a Python datetime, and converting them raises OverflowError.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidJob(f"{name}: out of range (years 1 to 9999, in UTC): {given!r}") from None


def _show_time(value: datetime | None) -> str | None:
    # Not strftime("%Y"): it writes year 1 as "1", which fromisoformat refuses on the next page.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="minutes") if value else None


@dataclass
class JobPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    filters: JobFilters
    first: bool


def cursor_of(status: str | None, row: dict[str, Any]) -> str:
    listing = {None: ("id",), "PENDING": ("priority", "availableAt", "id"),
               "PROCESSING": ("startedAt", "id")}.get(status, ("completedAt", "id"))
    values = [row[c].isoformat() if isinstance(row[c], datetime) else row[c] for c in listing]
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


_PRIORITY_RANGE = range(-2**31, 2**31)  # the column is an integer


def _cursor_params(status: str | None, cursor: str) -> dict[str, Any]:
    """The values of `cursor_of`'s cursor, checked one by one: a link is the user's
    to edit, and a value of the wrong type or out of range must be a 400, not a
    driver's error."""
    invalid = InvalidJob("this page link is not valid any more: start from the first page")
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise invalid from None
    shape = {None: ("id",), "PENDING": ("priority", "time", "id")}.get(status, ("time", "id"))
    if not isinstance(values, list) or len(values) != len(shape):
        raise invalid
    params: dict[str, Any] = {}
    for name, value in zip(shape, values, strict=True):
        if name == "id" and isinstance(value, str) and "\x00" not in value:
            params["c_id"] = value
        elif (name == "priority" and isinstance(value, int) and not isinstance(value, bool)
              and value in _PRIORITY_RANGE):
            params["c_priority"] = value
        elif name == "time" and isinstance(value, str):
            try:
                at = datetime.fromisoformat(value)
            except ValueError:
                raise invalid from None
            params["c_time"] = _in_utc(at if at.tzinfo else at.replace(tzinfo=UTC),
                                       "page link", value)
        else:
            raise invalid
    return params


def list_jobs(settings: DashboardSettings, filters: JobFilters,
              cursor: str | None = None) -> JobPage:
    listing = ops_sql.JOB_LISTINGS[filters.status]
    key = filters.key
    if key is not None:
        key = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    params: dict[str, Any] = {"status": filters.status, "type": filters.type,
                              "user_id": filters.user_id, "key": key, "since": filters.since,
                              "until": filters.until, "limit": settings.page_size + 1,
                              "key_low": None}
    after = ""
    if cursor:
        params.update(_cursor_params(filters.status, cursor))
        after = listing["after"]
    with reading(settings) as c:
        if filters.key and _sorts_by_code_point(c):
            bounds = _prefix_range(filters.key)
            if bounds:
                params["key_low"], params["key_high"] = bounds
        clauses = " ".join(clause.format(time=listing["time"])
                           for name, clause in ops_sql.JOB_LISTING_FILTERS.items()
                           if params[name] is not None)
        statement = text(ops_sql.LIST_JOB_PAGE.format(filters=clauses, after=after,
                                                      order=listing["order"]))
        rows = [dict(r._mapping) for r in c.execute(statement, params)]
    more = len(rows) > settings.page_size
    rows = rows[:settings.page_size]
    next_cursor = cursor_of(filters.status, rows[-1]) if more and rows else None
    return JobPage(rows, next_cursor, filters, first=cursor is None)


_CODE_POINT_COLLATIONS = {"C", "POSIX", "C.UTF-8", "C.utf8", "C.UTF8"}
_code_point: dict[str, bool] = {}


def _sorts_by_code_point(c: Connection) -> bool:
    """Whether this database orders text by code point (asked once per database)."""
    url = str(c.engine.url)
    if url not in _code_point:
        row = c.execute(ops_sql.DATABASE_COLLATION).one()
        _code_point[url] = row.provider in (None, "c") and row.collate in _CODE_POINT_COLLATIONS
    return _code_point[url]


def _prefix_range(prefix: str) -> tuple[str, str] | None:
    """[prefix, next) such that, in code-point order, a string starts with `prefix`
    exactly when it lies in the range; None when the last character has no successor."""
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:
        last = 0xE000
    if last > 0x10FFFF:
        return None
    return prefix, prefix[:-1] + chr(last)


def find_job(settings: DashboardSettings, q: str) -> list[str]:
    with reading(settings) as c:
        return [r.id for r in c.execute(ops_sql.FIND_JOB, {"q": q})]


# -- one job --------------------------------------------------------------------------------------


@dataclass
class JobView:
    job: Job
    worker: Any | None  # the process table's row of the child that holds it
    outcome: job_page.Outcome
    times: list[job_page.Timing]
    durations: list[job_page.Field]
    details: list[job_page.Field]  # every other column, labelled (job_page.py)
    log: list[Any] = field(default_factory=list)  # rows of "DashboardAction" about it
    actions: list[Any] = field(default_factory=list)  # the job actions that apply now
    ready_now: bool = False
    parents: list[Any] = field(default_factory=list)  # dependencies.Edge, for the graph
    dependents: list[Any] = field(default_factory=list)
    batch: Any | None = None  # batches.BatchInfo of the batch it is in, or calls back
    waiting: list[str] = field(default_factory=list)  # why a pending job is not claimable


def job_view(settings: DashboardSettings, job_id: str) -> JobView | None:
    with reading(settings) as c:
        row = c.execute(sql.GET_JOB, {"id": job_id}).first()
        if row is None:
            return None
        job = Job.from_row(row)
        worker = (c.execute(ops_sql.JOB_WORKER, {"locked_by": job.locked_by}).first()
                  if job.locked_by else None)
        other = c.execute(ops_sql.JOB_OTHER_COLUMNS,
                          {"id": job_id, "known": sorted(job_page.SHOWN_COLUMNS)}).scalar_one_or_none()
        log = c.execute(ops_sql.ACTIONS_ON, {"target": job_id, "limit": 20}).fetchall()
        now = c.execute(ops_sql.DB_NOW).scalar_one()
        ups = dependencies.parents(job_id, conn=c)
        downs = dependencies.dependents(job_id, conn=c, limit=GRAPH_LIMIT)
        in_batch = batches.batch_of(job_id, conn=c) if ups or downs else None
        batch = batches.get_batch(in_batch, conn=c) if in_batch else None
        waiting = why.explain(job_id, conn=c) if job.status == "PENDING" else []
    ready = job.available_at is not None and job.available_at <= now
    times, durations = job_page.timing(job, now)
    return JobView(job, worker, job_page.outcome(job, worker, now, other or {}), times, durations,
                   job_page.details(job, worker, other or {}, now), list(log),
                   ready_now=ready, parents=ups[:GRAPH_LIMIT], dependents=downs, batch=batch,
                   waiting=waiting)


# A job's page lists this many parents and dependents at most (a batch's callback
# has one parent per member).
GRAPH_LIMIT = 50


# -- processes, schedules, the action log -----------------------------------------------------------


def process_groups(settings: DashboardSettings) -> list[tuple[Any, list[Any]]]:
    """Each master with its children, masters by host; orphans (a child whose master
    row is gone) are listed under a group of their own."""
    with reading(settings) as c:
        rows = processes.list_processes(conn=c)
    masters: dict[str, tuple[Any, list[Any]]] = {r.id: (r, []) for r in rows if r.kind == "master"}
    orphans: list[Any] = []
    for r in rows:
        if r.kind != "child":
            continue
        if r.master_id in masters:
            masters[r.master_id][1].append(r)
        else:
            orphans.append(r)
    groups: list[tuple[Any, list[Any]]] = list(masters.values())
    if orphans:
        groups.append((None, orphans))
    return groups


@dataclass
class ScheduleRow:
    name: str
    schedule: schedules_mod.Schedule | None  # None: known to the database, not configured here
    last: datetime | None
    next: list[datetime]


def schedule_rows(settings: DashboardSettings, count: int = 3) -> tuple[list[ScheduleRow], str | None]:
    """The configured schedules with their cursors, then cursors of schedules this
    dashboard has no definition for; and the file they came from."""
    configured = schedules_mod.load(settings.schedule_file)
    with reading(settings) as c:
        cursors = {r.name: r.lastOccurrence for r in c.execute(ops_sql.ALL_SCHEDULE_CURSORS)}
        now = c.execute(ops_sql.DB_NOW).scalar_one()
    out = []
    for s in configured:
        upcoming = []
        for occurrence in s.parsed.occurrences(now, s.zone):
            upcoming.append(occurrence)
            if len(upcoming) == count:
                break
        out.append(ScheduleRow(s.name, s, cursors.pop(s.name, None), upcoming))
    out.extend(ScheduleRow(name, None, last, []) for name, last in sorted(cursors.items()))
    return out, settings.schedule_file


def recent_actions(settings: DashboardSettings, limit: int = 200) -> list[Any]:
    with reading(settings) as c:
        return list(c.execute(ops_sql.RECENT_ACTIONS, {"limit": limit}))
