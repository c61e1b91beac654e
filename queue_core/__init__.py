"""skiplock's queue core: the job table and every operation on it.

    from skiplock.queue_core import enqueue, claim, complete, fail
"""

# This folder is installed as `skiplock.queue_core` (skiplock/queue_core links here). Imported
# by its bare name (the repository's root on sys.path), it would load a second copy
# of every module, with its own engine, registry and settings: refuse at once.
if __name__ != "skiplock.queue_core":
    raise ImportError(f"import skiplock.queue_core, not {__name__}: the repository's "
                      "top-level folders are parts of the one package `skiplock`")

from skiplock.queue_core.aio import acancel, acancel_many, aenqueue, aenqueue_many, await_result
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
    WaitTimeout,
)
from skiplock.queue_core.features.batches import Batch, BatchInfo, batch, get_batch
from skiplock.queue_core.features.cancel import (
    CancelOutcome,
    CancelResult,
    cancel,
    cancel_many,
    cancel_matching,
)
from skiplock.queue_core.features.checkpoints import checkpoint, last_checkpoint
from skiplock.queue_core.features.dependencies import (
    Edge,
    dependents,
    parent_results,
    parents,
    release_waiting,
)
from skiplock.queue_core.features.job_progress import progress
from skiplock.queue_core.features.waiting import wait
from skiplock.queue_core.jobs import Job, JobRef, JobStatus
from skiplock.queue_core.lifecycle import claim, complete, fail, heartbeat, release
from skiplock.queue_core.maintenance import QueueStats, cleanup, get_job, retry_dead, stats
from skiplock.queue_core.recovery import Recovered, recover_stuck

__all__ = [
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
    "WaitTimeout",
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
    "last_checkpoint",
    "progress",
    "recover_stuck",
    "release",
    "retry_dead",
    "stats",
    "wait",
]
