"""The words for how a job's run ended, and for what the master owes a job whose
child is gone: one vocabulary for the child, the master, the `finished`
message, the observers' hooks and the metrics.

`JobOutcome` is a `StrEnum`: it travels over the pipe and reaches an
observer's `on_job_finished` as the same word it always was.
"""

from __future__ import annotations

import enum


class JobOutcome(enum.StrEnum):
    COMPLETED = "completed"
    RETRIED = "retried"  # failed; back in the queue after its backoff
    DEAD_LETTERED = "dead_lettered"  # failed for the last time
    RELEASED = "released"  # back in the queue uncharged (never started, or a free interruption)
    CANCELLED = "cancelled"
    SNOOZED = "snoozed"  # asked to run again later
    LOST = "lost"  # no longer this worker's: rescued or settled elsewhere

    @property
    def failed(self) -> bool:
        """Whether the run counts as a failure (logged with its reason, as a warning)."""
        return self in FAILED

    @property
    def word(self) -> str:
        """How a log line says it."""
        return self.value.replace("_", "-")


FAILED = frozenset({JobOutcome.RETRIED, JobOutcome.DEAD_LETTERED})

# A fenced failure (`lifecycle.fail`) answers with the status it left, or None when
# the job was no longer ours; this is the one table that reads that answer.
_AFTER_FAILURE = {"PENDING": JobOutcome.RETRIED, "DEAD_LETTER": JobOutcome.DEAD_LETTERED}


def after_failure(status: str | None) -> JobOutcome:
    """The outcome of a fenced failure, from the status it left the job in."""
    return _AFTER_FAILURE.get(status or "", JobOutcome.LOST)


def after_change(outcome: str | None) -> JobOutcome:
    """The outcome of a fenced change that answers with a word of its own (`interrupt`,
    `snooze`), or None when the job was no longer ours."""
    return JobOutcome(outcome) if outcome else JobOutcome.LOST


def after_release(done: bool) -> JobOutcome:
    return JobOutcome.RELEASED if done else JobOutcome.LOST


class SettleAction(enum.Enum):
    """What the master writes for a job its child left behind (pool/settlements.py)."""

    FAIL = "fail"  # the attempt counts (a crash, a timeout)
    INTERRUPT = "interrupt"  # free the first few times (queue_core/accounting.py)
    RELEASE = "release"  # never started: it does not count
    # Every job the child's worker id still holds but those it started: also those
    # claimed just before the child died, which the master never heard of.
    RELEASE_UNSTARTED = "release_unstarted"
