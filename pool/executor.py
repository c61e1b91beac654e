"""One job's life in a child: prepare it, run its handler in its savepoint of the
group's transaction, and classify how it ended.

`Executor.execute` reads as the job's life: a payload that cannot be decoded,
a cancel that came while it waited, a payload its type refuses or a type with
no handler end it before it runs; then the handler runs, and its end is one of:

- it returned success: its outcome waits in the group for the commit (None);
- it returned failure, or raised: its writes roll back to its savepoint and it
  is failed in the group's transaction (it waits there too);
- it asked to snooze: rolled back, and put back for later;
- its own connection died under it, or a call of its own lost skiplock's
  database: an interruption, settled on its own (`JobOutcome`).

Only skiplock's own statements (opening the transaction, its savepoint, the
completion, the claim, the commit) are translated into skiplock's errors.
Whatever the handler raises is the handler's, reported as such, even a driver
error on another database; the one thing read from it is whether the job's
own connection died under it.

The executor needs no process of its own: tests/pool/test_executor.py runs
every outcome in the test's process, against a real database.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from skiplock.handlers import registry
from skiplock.handlers.registry import JobResult, Registration
from skiplock.pool import protocol
from skiplock.pool.group_commit import Group, JobScope, Outcome
from skiplock.pool.outage import Outage
from skiplock.pool.outcomes import JobOutcome, after_change
from skiplock.pool.settler import Settler
from skiplock.queue_core import Job, tracing
from skiplock.queue_core.config import Settings
from skiplock.queue_core.database import db, faults
from skiplock.queue_core.errors import DatabaseUnavailable, InvalidPayload
from skiplock.queue_core.features import checkpoints
from skiplock.queue_core.features.cancel import end_cancelled
from skiplock.queue_core.features.snooze import snooze
from skiplock.queue_core.payloads import parse_payload
from skiplock.queue_core.storable import describe_exception, first_line

log = logging.getLogger("skiplock.worker")

# Context managers entered around every handler call of this process's children,
# in the order given: what a framework does around each unit of work (skiplock.django
# gives the ORM's connections the care Django gives them around a request).
_around_jobs: list[Callable[[], AbstractContextManager[object]]] = []


def around_each_job(factory: Callable[[], AbstractContextManager[object]]) -> None:
    """Enter `factory()` around every handler call, inside the job's savepoint; what it
    raises is the handler's failure. Call it before the pool starts: children inherit it."""
    _around_jobs.append(factory)


@contextlib.contextmanager
def _around_job() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for factory in _around_jobs:
            stack.enter_context(factory())
        yield


class _Failed(Exception):
    def __init__(self, result: JobResult) -> None:
        super().__init__(result.error)
        self.result = result


class Executor:
    def __init__(self, settings: Settings, worker_id: str, group: Group, settler: Settler,
                 outage: Outage, abandon_group: Callable[[BaseException], None]) -> None:
        self.job_timeout_s = settings.job_timeout_s
        self.worker_id = worker_id
        self.group = group
        self.settler = settler
        self.outage = outage
        self.abandon_group = abandon_group  # the completer's: settle what waited in it
        self.in_handler = False  # SIGQUIT raises into handler code only
        # Job types whose last job here never asked for its transaction.
        self.dbless_types: set[str] = set()
        # Each run as a span (queue_core/tracing.py), set by the child once its handler
        # modules are imported: None without a tracer provider.
        self.tracing: tracing.RunTracer | None = None

    def prepare(self, job: Job) -> tuple[Registration | None, protocol.PreparedStarted]:
        """The job's handler and its `started` but for the times, looked up and built
        with its batch's others, while that code is hot."""
        registration = registry.get_registration(job.type)
        timeout_s = (registration.timeout_s if registration else None) or self.job_timeout_s
        return registration, protocol.PreparedStarted(protocol.Started(
            job.id, job.type, self.worker_id, job.attempts, job.max_attempts, timeout_s))

    def execute(self, job: Job, registration: Registration | None,
                started: float) -> JobOutcome | None:
        """Run the job to an end: its outcome, or None when it waits in the group for
        the commit (pool/completer.py). With tracing on, inside the run's span."""
        if self.tracing is None:
            return self.run_to_end(job, registration, started)
        with self.tracing.run(job) as span:
            outcome = self.run_to_end(job, registration, started)
            self.tracing.ended(span, *self.traced_outcome(job, outcome))
            return outcome

    def traced_outcome(self, job: Job, outcome: JobOutcome | None) -> tuple[str, str | None]:
        """How the run ended, and why it failed, as the executor knows it when the run
        ends. A job that waits in the group is said as its commit will write it
        (completed; retried, or dead-lettered when no attempt is left): a commit that
        fails after the span ended is settled, and logged, as it always is."""
        if outcome is not None:
            return outcome.value, self.settler.reasons.get(job.id) if outcome.failed else None
        waiting = self.group.outcomes[-1] if self.group.outcomes else None
        if waiting is None or waiting.job is not job or waiting.error is None:
            return JobOutcome.COMPLETED.value, None
        retried = waiting.retry and job.attempts < job.max_attempts
        return (JobOutcome.RETRIED if retried else JobOutcome.DEAD_LETTERED).value, waiting.error

    def run_to_end(self, job: Job, registration: Registration | None,
                   started: float) -> JobOutcome | None:
        if job.decode_error is not None:
            return self.settler.fail(job, job.decode_error, retry=False)
        if job.cancel_requested_at is not None:  # cancelled while it waited (queue_core/features/cancel.py)
            return self.settler.settle(
                lambda: JobOutcome.CANCELLED if end_cancelled(job, started=False)
                else JobOutcome.LOST)
        try:
            # A typed registration's handler is given its model instance (handlers/registry.py).
            payload = (parse_payload(job.type, job.payload) if registration is None
                       else registration.payload_for(job.payload))
        except InvalidPayload as exc:
            return self.settler.fail(job, str(exc), retry=False)
        if registration is None:
            return self.settler.fail(job, f"no handler registered for job type {job.type}",
                                     retry=False)
        try:
            # The job's transaction is opened before its handler runs, so that a
            # database that cannot be reached costs the job nothing: the handler
            # would have nowhere to write. Not for a type whose last job here never
            # used it: its group then takes no connection out of the engine's pool
            # and puts none back, cold code that a CPU-bound job would pay for
            # (docs/benchmarks.md). If such a job does ask, the transaction opens
            # then, and a failure to open it is an interruption (`handler_raised`).
            if not self.group.open() and job.type not in self.dbless_types:
                with db.translate_errors():
                    self.group.connection()
        except DatabaseUnavailable as exc:  # the handler never ran: nothing to charge
            self.abandon_group(exc)
            self.outage.failed(exc)
            return self.settler.release(
                job, f"worker could not open the job's transaction: {first_line(exc)}")
        scope = JobScope(self.group)
        try:
            return self.run_handler(job, registration, payload, scope, started)
        except _Failed as exc:
            if exc.result.snooze_s is not None:  # queue_core/features/snooze.py
                self.rollback_scope(scope)
                delay, bound = exc.result.snooze_s, registration.max_snoozes
                taken = checkpoints.taken(job.id)
                outcome = self.settler.settle(lambda: after_change(
                    snooze(job, delay, bound, checkpoint=taken)))
                if outcome is JobOutcome.DEAD_LETTERED:  # the lastError sql.SNOOZE writes
                    self.settler.reasons[job.id] = f"snoozed {bound} times, the limit of its type"
                return outcome
            return self.fail_in_group(job, scope, started,
                                      exc.result.error or "handler reported failure",
                                      retry=exc.result.should_retry)
        finally:
            if scope.savepoint is None:
                self.dbless_types.add(job.type)
            else:
                self.dbless_types.discard(job.type)

    def run_handler(self, job: Job, registration: Registration, payload: Any,
                    scope: JobScope, started: float) -> JobOutcome | None:
        """The handler, in its savepoint of the group's transaction: the handler's writes
        and the completion commit together or not at all (docs/internals.md, the job's
        transaction)."""
        # What the handler resumes from; what it checkpoints goes with the run's end
        # unless that is a completion (`checkpoints.taken`).
        checkpoints.begin(job.id, job.checkpoint)
        try:
            with db.bind_job_connection(scope):
                self.in_handler = True
                try:
                    if _around_jobs:
                        with _around_job():
                            result = registration.fn(payload, job.id)
                    else:
                        result = registration.fn(payload, job.id)
                finally:
                    self.in_handler = False
        except Exception as exc:
            return self.handler_raised(job, scope, started, exc)
        if not isinstance(result, JobResult):
            raise _Failed(JobResult(False, error=f"handler of {job.type} returned "
                                                 f"{type(result).__name__}, not a JobResult"))
        if not result.success:
            raise _Failed(result)
        if scope.savepoint is not None:  # else the job never touched its transaction
            try:
                with db.translate_errors():
                    scope.release()
            except DatabaseUnavailable as exc:
                if not self.group.broken() and faults.server_answered(exc):
                    # The server answered: a statement in the job's transaction failed (a
                    # lock or statement timeout the handler set, a deadlock). That is an
                    # attempt, or such a job would come back forever without accounting
                    # (docs/lessons.md, poison jobs).
                    log.warning("job %s %s: %s", job.type, job.id, first_line(exc),
                                extra={"job_id": job.id, "job_type": job.type})
                    return self.fail_in_group(job, scope, started,
                                              first_line(exc.__cause__ or exc), retry=True)
                self.abandon_group(exc)
                return self.settler.interrupted(
                    job, "the job's database connection was lost before it committed: "
                         f"{first_line(exc.__cause__ or exc)}",
                    checkpoint=checkpoints.taken(job.id))
            except SQLAlchemyError as exc:
                # Our statement was refused in a transaction the handler left aborted
                # (it caught an error of its own and returned).
                return self.fail_in_group(job, scope, started, f"the job's transaction could not "
                                          f"commit: {describe_exception(exc)}", retry=True)
        now = time.monotonic()
        # Its checkpoint goes with it: should the group's commit fail, the job is
        # interrupted and its next run resumes.
        self.group.add(Outcome(job, now - started, now, result=result.data,
                               checkpoint=checkpoints.taken(job.id)))
        return None

    def handler_raised(self, job: Job, scope: JobScope, started: float,
                       exc: Exception) -> JobOutcome | None:
        # The job's own connection (the group's) died under the handler, or a skiplock
        # call of the handler's lost its connection to skiplock's database (only
        # skiplock's own statements raise DatabaseUnavailable): not necessarily the
        # handler's fault (a restart, a failover), so an interruption.
        own = self.group.broken()
        theirs = isinstance(exc, DatabaseUnavailable) and not faults.server_answered(exc)
        if own or theirs:
            if own:
                self.abandon_group(exc)
            else:
                self.rollback_scope(scope)
            which = "the job's database connection" if own else \
                "a connection of the handler's to skiplock's database"
            return self.settler.interrupted(
                job, f"{which} was lost while the handler ran: {describe_exception(exc)}",
                checkpoint=checkpoints.taken(job.id))
        log.warning("job %s %s raised %s", job.type, job.id, type(exc).__name__,
                    exc_info=True, extra={"job_id": job.id, "job_type": job.type})
        return self.fail_in_group(job, scope, started, describe_exception(exc), retry=True)

    def rollback_scope(self, scope: JobScope) -> bool:
        """Roll the job's writes back to its savepoint; False (and the group settled
        job by job) when even that failed: the group's transaction cannot commit."""
        try:
            with db.translate_errors():
                scope.rollback()
        except Exception as exc:
            self.abandon_group(exc)
            return False
        return True

    def fail_in_group(self, job: Job, scope: JobScope, started: float, error: str, *,
                      retry: bool) -> JobOutcome | None:
        """Roll the job's writes back to its savepoint; it is failed in the group's
        transaction. When even that rollback fails the group cannot commit: its jobs
        are settled one by one, and this one is failed on its own."""
        taken = checkpoints.taken(job.id)
        if not self.rollback_scope(scope):
            return self.settler.fail(job, error, retry=retry, checkpoint=taken)
        now = time.monotonic()
        self.group.add(Outcome(job, now - started, now, error=error, retry=retry,
                               checkpoint=taken))
        return None
