"""The job as the rest of the code sees it: a row of "WorkerJob"."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from skiplock.queue_core.storable import load_json


class JobStatus(enum.StrEnum):
    """The Prisma schema's status values, stored in the PostgreSQL enum "JobStatus"."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # cancelled (the Prisma schema declares it, its service never writes it)
    DEAD_LETTER = "DEAD_LETTER"


class Fenced(Protocol):
    """What a fenced state change needs to know: which row, held by whom, at which attempt."""

    @property
    def id(self) -> str: ...

    @property
    def locked_by(self) -> str | None: ...

    @property
    def attempts(self) -> int: ...


@dataclass(frozen=True)
class Progress:
    """What a handler last reported with `skiplock.progress`."""

    fraction: float | None
    message: str | None


@dataclass(frozen=True)
class JobRef:
    """The fencing triple, as a master rebuilds it from what its child reported."""

    id: str
    locked_by: str | None
    attempts: int


@dataclass(frozen=True)
class Job:
    """One row of "WorkerJob"."""

    id: str
    type: str
    payload: dict[str, Any]
    status: str
    priority: int
    available_at: datetime | None
    attempts: int
    max_attempts: int
    last_error: str | None
    locked_at: datetime | None
    locked_by: str | None
    idempotency_key: str | None
    user_id: str | None
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    result: Any = None
    interruptions: int = 0
    # Why the payload could not be decoded (then `payload` is empty): the pool fails
    # such a job alone, without a retry (queue_core/storable.py).
    decode_error: str | None = None
    cancel_requested_at: datetime | None = None
    cancelled_by: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    held_back: bool | None = None
    unique_key: str | None = None
    unique_until: datetime | None = None
    progress: float | None = None
    progress_message: str | None = None
    snoozes: int | None = None
    # What the handler last passed to `skiplock.checkpoint` (None: never, or None),
    # what its next run resumes from (queue_core/features/checkpoints.py).
    checkpoint: Any = None
    # The trace context it was enqueued in, as stored (JSON text; queue_core/tracing.py):
    # decoded only by a child that traces its runs.
    trace_context: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> Job:
        decode_error = None
        if "payload_json" in m:  # the claim's text, decoded here, one row at a time
            payload, decode_error = _claimed_payload(m["payload_json"])
        else:
            payload = _as_object(m["payload"])
        if "checkpoint_json" in m:
            checkpoint, unusable = _claimed_checkpoint(m["checkpoint_json"])
            decode_error = decode_error or unusable
        else:
            checkpoint = m.get("checkpoint")
        result = m.get("result")
        if m.get("result_json") is not None:
            result, why = load_json(m["result_json"])
            if why is not None:
                result = f"<the result cannot be shown: {why}>"
        return cls(
            id=m["id"],
            type=m["type"],
            payload=payload,
            status=str(m["status"]),
            priority=m["priority"],
            available_at=m["availableAt"],
            attempts=m["attempts"],
            max_attempts=m["maxAttempts"],
            last_error=m["lastError"],
            locked_at=m["lockedAt"],
            locked_by=m["lockedBy"],
            idempotency_key=m["idempotencyKey"],
            user_id=m["userId"],
            created_at=m["createdAt"],
            started_at=m["startedAt"],
            completed_at=m["completedAt"],
            result=result,
            interruptions=m.get("interruptions") or 0,
            decode_error=decode_error,
            checkpoint=checkpoint,
            trace_context=_trace_context(m),
            **{name: m.get(column) for name, column in _FEATURE_COLUMNS.items()},
        )

    @classmethod
    def from_claim(cls, m: Mapping[str, Any]) -> Job:
        """A job as a pool child's completion-and-claim statement returns it
        (`sql.COMPLETE_AND_CLAIM`): only the columns the child reads, the status the
        claim set, and None for what was not asked for (its last error, its times,
        its user, its keys). Not for anything that shows a job: `from_mapping` reads
        the whole row."""
        payload, decode_error = _claimed_payload(m["payload_json"])
        checkpoint, unusable = _claimed_checkpoint(m["checkpoint_json"])
        return cls(
            id=m["id"], type=m["type"], payload=payload, status=JobStatus.PROCESSING.value,
            priority=m["priority"], available_at=m["availableAt"], attempts=m["attempts"],
            max_attempts=m["maxAttempts"], locked_by=m["lockedBy"],
            cancel_requested_at=m["cancelRequestedAt"], checkpoint=checkpoint,
            trace_context=m["trace_context"],
            decode_error=decode_error or unusable,
            last_error=None, locked_at=None, idempotency_key=None, user_id=None,
            created_at=None, started_at=None, completed_at=None,
        )

    @property
    def ref(self) -> JobRef:
        return JobRef(self.id, self.locked_by, self.attempts)

    def to_dict(self) -> dict[str, Any]:
        """The row with the Prisma schema's column names, times as ISO 8601 (for `--json`)."""
        out: dict[str, Any] = {}
        for name, column in _COLUMNS.items():
            value = getattr(self, name)
            out[column] = value.isoformat() if isinstance(value, datetime) else value
        if self.decode_error is not None:
            which = "checkpoint" if self.decode_error.startswith(_CHECKPOINT_UNUSABLE) \
                else "payload"
            out[which] = f"<{self.decode_error}>"
        out["traceContext"] = None
        if self.trace_context is not None:
            out["traceContext"], _ = load_json(self.trace_context)
        return out


def _trace_context(m: Mapping[str, Any]) -> str | None:
    """The stored trace context as text: a statement of sql.py returns it so
    (`trace_context`), a whole row (`SELECT *`) as the driver decoded it."""
    if "trace_context" in m:
        return m["trace_context"]
    stored = m.get("traceContext")
    return None if stored is None else json.dumps(stored)


def _claimed_payload(text: str) -> tuple[dict[str, Any], str | None]:
    """A claimed row's payload text as the handler gets it, and why it cannot be used
    (then the payload is empty and the pool fails the job alone)."""
    payload, why = load_json(text)
    if why is not None:
        return {}, f"the payload cannot be used: {why}"
    return _as_object(payload), None


_CHECKPOINT_UNUSABLE = "the checkpoint cannot be used"


def _claimed_checkpoint(text: str | None) -> tuple[Any, str | None]:
    """A claimed row's checkpoint as the handler resumes from it, and why it cannot be
    used (written by something other than `skiplock.checkpoint`, which refuses what
    would not come back: the pool then fails the job alone, as for its payload;
    `skiplock retry --from-start` drops it)."""
    if text is None:
        return None, None
    checkpoint, why = load_json(text)
    if why is not None:
        return None, f"{_CHECKPOINT_UNUSABLE}: {why}"
    return checkpoint, None


def _as_object(payload: Any) -> dict[str, Any]:
    return payload if isinstance(payload, dict) else {"_value": payload}


_COLUMNS = {
    "id": "id",
    "type": "type",
    "payload": "payload",
    "status": "status",
    "priority": "priority",
    "available_at": "availableAt",
    "attempts": "attempts",
    "max_attempts": "maxAttempts",
    "last_error": "lastError",
    "locked_at": "lockedAt",
    "locked_by": "lockedBy",
    "idempotency_key": "idempotencyKey",
    "user_id": "userId",
    "created_at": "createdAt",
    "started_at": "startedAt",
    "completed_at": "completedAt",
    "result": "result",
    "interruptions": "interruptions",
    "checkpoint": "checkpoint",
}

# Columns of migration 0005_features (cancel, limits, unique windows, progress, snooze).
_FEATURE_COLUMNS = {
    "cancel_requested_at": "cancelRequestedAt",
    "cancelled_by": "cancelledBy",
    "concurrency_key": "concurrencyKey",
    "concurrency_limit": "concurrencyLimit",
    "held_back": "heldBack",
    "unique_key": "uniqueKey",
    "unique_until": "uniqueUntil",
    "progress": "progress",
    "progress_message": "progressMessage",
    "snoozes": "snoozes",
}
_COLUMNS.update(_FEATURE_COLUMNS)
