"""skiplock: a durable job queue on PostgreSQL with a prefork worker pool.

The public API in one import:

    import skiplock
    job_id = skiplock.enqueue("INTERPRET_EVENT", {"eventId": "evt_1"})

    @skiplock.handler("RESIZE_IMAGE")
    def resize(payload, job_id):
        ...
        return skiplock.JobResult(success=True)
"""

from skiplock.handlers import JobResult, get_handler, handler, register_handler
from skiplock.queue_core import (
    Batch,
    BatchInfo,
    CancelOutcome,
    CancelResult,
    Edge,
    Job,
    JobRef,
    QueueStats,
    SkiplockError,
    batch,
    cancel,
    cancel_many,
    cancel_matching,
    claim,
    cleanup,
    complete,
    dependents,
    enqueue,
    enqueue_detect_patterns,
    enqueue_generate_insights,
    enqueue_generate_review,
    enqueue_generate_tomorrow_plan,
    enqueue_interpret_event,
    enqueue_many,
    enqueue_suggest_uom_update,
    fail,
    get_batch,
    get_job,
    heartbeat,
    parent_results,
    parents,
    progress,
    recover_stuck,
    release_waiting,
    retry_dead,
    stats,
    wait,
)

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchInfo",
    "Edge",
    "batch",
    "dependents",
    "get_batch",
    "parent_results",
    "parents",
    "release_waiting",
    "CancelOutcome",
    "CancelResult",
    "cancel",
    "cancel_many",
    "cancel_matching",
    "Job",
    "JobRef",
    "JobResult",
    "QueueStats",
    "SkiplockError",
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
    "get_handler",
    "get_job",
    "handler",
    "heartbeat",
    "progress",
    "recover_stuck",
    "register_handler",
    "retry_dead",
    "stats",
    "wait",
]
