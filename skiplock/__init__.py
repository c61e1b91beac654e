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
    acancel,
    acancel_many,
    aenqueue,
    aenqueue_many,
    await_result,
    batch,
    cancel,
    cancel_many,
    cancel_matching,
    checkpoint,
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
    last_checkpoint,
    parent_results,
    parents,
    progress,
    recover_stuck,
    release_waiting,
    retry_dead,
    stats,
    wait,
)
from skiplock.queue_core.database.db import transaction
from skiplock.queue_core.features.fairness import set_weight

__version__ = "0.1.0"

__all__ = [
    "set_weight",
    "acancel",
    "acancel_many",
    "aenqueue",
    "aenqueue_many",
    "await_result",
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
    "checkpoint",
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
    "last_checkpoint",
    "progress",
    "recover_stuck",
    "register_handler",
    "retry_dead",
    "stats",
    "transaction",
    "wait",
]
