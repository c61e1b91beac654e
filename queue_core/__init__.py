"""skiplock's queue core: the job table and every operation on it.

    from queue_core import enqueue, claim, complete, fail
"""

from queue_core.backoff import backoff_base_s, backoff_s
from queue_core.enqueue import (
    enqueue,
    enqueue_detect_patterns,
    enqueue_generate_insights,
    enqueue_generate_review,
    enqueue_generate_tomorrow_plan,
    enqueue_interpret_event,
    enqueue_many,
    enqueue_suggest_uom_update,
)
from queue_core.errors import (
    DatabaseUnavailable,
    InvalidJob,
    InvalidPayload,
    JobNotFound,
    SkiplockError,
    UnknownJobType,
)
from queue_core.jobs import Job, JobRef, JobStatus
from queue_core.lifecycle import claim, complete, fail, heartbeat, release
from queue_core.maintenance import QueueStats, cleanup, get_job, retry_dead, stats
from queue_core.recovery import Recovered, recover_stuck

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
