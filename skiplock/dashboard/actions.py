"""What an operator may do from the dashboard, each logged with who, what and when.

Two kinds, each a small registry:

- job actions (`JOB_ACTIONS`), buttons on a job's page: retry (a dead
  letter, or a cancelled job, as `skiplock retry ID` does), run now (a
  waiting PENDING job), cancel (a pending or running job;
  queue_core/features/cancel.py). An action names the jobs it applies to and performs
  itself on a connection; another one is one more `JobAction(...)` entry here
  and appears on the page by itself.
- bulk actions (`BULK_ACTIONS`): retry the dead letters of a type or all of
  them, pause and resume a type. Those that touch many jobs are `confirm=True`:
  the first POST only shows how many jobs it would touch, and the action runs
  when the confirmation page's own POST comes back.

The action and its row in "DashboardAction" are one transaction: an action is
never done unlogged, nor logged undone. Every state change goes through the
fenced statements of the queue (`retry_dead` moves only DEAD_LETTER rows, and
FAILED ones named by id; `RUN_NOW` only PENDING ones), so a job that changed
meanwhile is left alone and the count says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from skiplock.dashboard.security import for_log
from skiplock.ops import pauses
from skiplock.ops import sql as ops_sql
from skiplock.queue_core.database.db import connect
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features.cancel import CancelOutcome, cancel
from skiplock.queue_core.jobs import Job
from skiplock.queue_core.maintenance import retry_dead

log = logging.getLogger("skiplock.dashboard")


@dataclass(frozen=True)
class Actor:
    who: str
    address: str | None


@dataclass(frozen=True)
class JobAction:
    name: str
    label: str
    done: str  # what the flash message says happened
    applies: Callable[[Job, bool], bool]  # (job, ready now) -> show the button
    perform: Callable[[Connection, Job, Actor], int]  # -> jobs changed
    danger: bool = False


def _retry(c: Connection, job: Job, actor: Actor) -> int:
    return len(retry_dead([job.id], conn=c))


def _run_now(c: Connection, job: Job, actor: Actor) -> int:
    return len(c.execute(ops_sql.RUN_NOW, {"id": job.id}).fetchall())


def _cancel(c: Connection, job: Job, actor: Actor) -> int:
    # queue_core/features/cancel.py: a pending job ends now, a running one is stopped by its
    # pool within a heartbeat; a job that finished meanwhile is left alone (0).
    result = cancel(job.id, by=f"dashboard:{actor.who}", conn=c)
    return 1 if result.outcome in (CancelOutcome.CANCELLED, CancelOutcome.CANCELLING) else 0


JOB_ACTIONS: dict[str, JobAction] = {a.name: a for a in (
    JobAction("retry", "Retry", "moved back to PENDING with fresh attempts",
              lambda job, ready: job.status in ("DEAD_LETTER", "FAILED"), _retry),
    JobAction("run-now", "Run now", "made ready to run now",
              lambda job, ready: job.status == "PENDING" and not ready, _run_now),
    JobAction("cancel", "Cancel", "cancelled (a running job is stopped within a heartbeat)",
              lambda job, ready: job.status in ("PENDING", "PROCESSING"), _cancel,
              danger=True),
)}


@dataclass(frozen=True)
class BulkAction:
    name: str
    label: str
    confirm: bool
    needs_type: bool
    count: Callable[[Connection, str | None], int]  # what it would touch, for the confirmation
    perform: Callable[[Connection, str | None, Actor], int]
    explain: str  # the confirmation's sentence; {n} jobs, {type}


def _dead(c: Connection, job_type: str | None) -> int:
    from skiplock.ops.health import dead_by_type

    by_type = dead_by_type(c)
    return by_type.get(job_type, 0) if job_type else sum(by_type.values())


def _pending_of(c: Connection, job_type: str | None) -> int:
    from skiplock.queue_core.maintenance import pending_breakdown

    return pending_breakdown(c).by_type.get(job_type or "", 0)


def _pause(c: Connection, job_type: str | None, actor: Actor) -> int:
    return _pending_of(c, job_type) if pauses.pause(job_type or "", f"from the dashboard, by {actor.who}",
                                                    conn=c) else 0


def _resume(c: Connection, job_type: str | None, actor: Actor) -> int:
    return _pending_of(c, job_type) if pauses.resume(job_type or "", conn=c) else 0


BULK_ACTIONS: dict[str, BulkAction] = {a.name: a for a in (
    BulkAction("retry-type", "Retry dead letters of this type", True, True, _dead,
               lambda c, t, actor: len(retry_dead(job_type=t, conn=c)),
               "Move {n} dead letters of {type} back to PENDING with fresh attempts?"),
    BulkAction("retry-all", "Retry all dead letters", True, False, _dead,
               lambda c, t, actor: len(retry_dead(all_dead=True, conn=c)),
               "Move all {n} dead letters, of every type, back to PENDING with fresh attempts?"),
    BulkAction("pause", "Pause", True, True, _pending_of, _pause,
               "Pause {type}? No pool on any host will claim its {n} pending jobs until it is "
               "resumed; running jobs finish."),
    BulkAction("resume", "Resume", False, True, _pending_of, _resume,
               "Resume {type}?"),
)}


def _record(c: Connection, actor: Actor, action: str, target: str, affected: int,
            detail: dict[str, Any] | None = None) -> None:
    c.execute(ops_sql.LOG_ACTION, {"who": actor.who, "address": actor.address, "action": action,
                                   "target": target, "affected": affected,
                                   "detail": json.dumps(detail) if detail else None})
    # The user name and a type come from the request: escaped, as every request's text in a log.
    who, shown = for_log(actor.who), for_log(target)
    log.info("dashboard: %s %s %s (%d jobs)", who, action, shown, affected,
             extra={"action": action, "target": shown, "who": who})


def run_job_action(name: str, job: Job, ready: bool, actor: Actor) -> int:
    action = JOB_ACTIONS.get(name)
    if action is None:
        raise InvalidJob(f"unknown action {name!r}")
    with connect() as c:
        affected = action.perform(c, job, actor)
        _record(c, actor, name, job.id, affected, {"type": job.type, "status": job.status})
    return affected


def bulk_count(name: str, job_type: str | None) -> int:
    with connect() as c:
        return BULK_ACTIONS[name].count(c, job_type)


def run_bulk_action(name: str, job_type: str | None, actor: Actor) -> int:
    action = BULK_ACTIONS[name]
    if action.needs_type and not job_type:
        raise InvalidJob(f"{action.label}: which job type?")
    with connect() as c:
        affected = action.perform(c, job_type, actor)
        _record(c, actor, name, job_type or "*", affected)
    return affected
