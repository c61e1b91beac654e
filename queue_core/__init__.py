"""skiplock's queue core: the job table and every operation on it.

    from skiplock.queue_core import enqueue, claim, complete, fail
"""

from skiplock.queue_core.backoff import backoff_base_s, backoff_s
from skiplock.queue_core.enqueue import (
    enqueue,
    enqueue_detect_patterns,
    enqueue_generate_insights,
    enqueue_generate_review,
    enqueue_generate_tomorrow_plan,
    enqueue_interpret_event,
    enqueue_many,
    enqueue_suggest_uom_update,
)
from skiplock.queue_core.errors import (
    DatabaseUnavailable,
    InvalidJob,
    InvalidPayload,
    JobNotFound,
    SkiplockError,
    TransactionConflict,
    UnknownJobType,
)
from skiplock.queue_core.jobs import Job, JobRef, JobStatus
from skiplock.queue_core.lifecycle import claim, complete, fail, heartbeat, release
from skiplock.queue_core.maintenance import QueueStats, cleanup, get_job, retry_dead, stats
from skiplock.queue_core.recovery import Recovered, recover_stuck

__all__ = [
    "DatabaseUnavailable",
    "InvalidJob",
    "InvalidPayload",
    "Job",
    "JobNotFound",
    "JobRef",
    "JobStatus",
    "QueueStats",
    "Recovered",
    "SkiplockError",
    "TransactionConflict",
    "UnknownJobType",
    "backoff_base_s",
    "backoff_s",
    "claim",
    "cleanup",
    "complete",
    "enqueue",
    "enqueue_detect_patterns",
    "enqueue_generate_insights",
    "enqueue_generate_review",
    "enqueue_generate_tomorrow_plan",
    "enqueue_interpret_event",
    "enqueue_many",
    "enqueue_suggest_uom_update",
    "fail",
    "get_job",
    "heartbeat",
    "recover_stuck",
    "release",
    "retry_dead",
    "stats",
]
