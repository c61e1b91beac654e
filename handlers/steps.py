"""What the six built-in handlers share: their payload as its model, and which
failures are final.

A handler body raises `MissingRecord` (an event, user, review or plan that does
not exist) or `InvalidJob` (a payload that does not fit) for a job that can
never succeed: `run_step` turns those into a failure without retry, whose
error names what is wrong. Anything else it lets through, and the pool retries
the job, as for any handler that raises (docs/jobs.md, "Who pays for a run").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

from skiplock.handlers.domain import store
from skiplock.handlers.registry import JobResult
from skiplock.queue_core.errors import InvalidJob, SkiplockError
from skiplock.queue_core.payload_models import model_of

M = TypeVar("M")


class MissingRecord(SkiplockError):
    """A record the job names does not exist."""


def run_step(job_type: str, model: type[M], payload: M | dict[str, Any],
             body: Callable[[M], dict[str, Any]]) -> JobResult:
    """`body(payload)`: a pool gives the handler its model instance; a JSON object
    (a handler called directly) is checked against the model first."""
    try:
        checked = payload if isinstance(payload, model) else model_of(model).validate(
            job_type, payload)
        data = body(checked)
    except (InvalidJob, MissingRecord) as exc:
        return JobResult(False, error=f"{job_type}: {exc}", should_retry=False)
    return JobResult(True, data=data)


def require_user(conn: Connection, user_id: str) -> store.UserRow:
    found = store.get_user(conn, user_id)
    if found is None:
        raise MissingRecord(f"user {user_id!r} does not exist")
    return found


def require_owner(kind: str, record_id: str, owner: str, user_id: str) -> None:
    if owner != user_id:
        raise InvalidJob(f"{kind} {record_id!r} belongs to another user than {user_id!r}")
