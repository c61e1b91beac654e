"""Where a child's next jobs come from: a claim of its own, or one that rides with
the commit of its last jobs (pool/completer.py).

The producer sizes each claim to the backlog (pool/claim_size.py), claims only
while the master keeps leases (pool/claim_gate.py) and the child is not about
to stop or recycle, and tells the master what it holds once the claim has
committed. Nothing is held until then: a claim that never committed is
nobody's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from skiplock.pool import protocol
from skiplock.pool.claim_gate import ClaimGate
from skiplock.pool.claim_size import ClaimSize, Durations
from skiplock.pool.settler import Settler
from skiplock.queue_core import Job, claim, sql
from skiplock.queue_core.claim_cursor import ClaimCursor
from skiplock.queue_core.config import Settings
from skiplock.queue_core.database import db
from skiplock.queue_core.errors import DatabaseUnavailable
from skiplock.queue_core.storable import describe_exception

log = logging.getLogger("skiplock.worker")


class PollInterval:
    """Adaptive polling: the minimum after a job, one step longer per empty poll."""

    def __init__(self, min_s: float, max_s: float, step_s: float) -> None:
        self.min_s, self.max_s, self.step_s = min_s, max_s, step_s
        self.current = min_s

    def after_empty(self) -> float:
        wait = self.current
        self.current = min(self.current + self.step_s, self.max_s)
        return wait

    def reset(self) -> None:
        self.current = self.min_s


class Producer:
    def __init__(
        self, settings: Settings, *, slot: int, worker_id: str, settler: Settler,
        send: Callable[..., None], gate: ClaimGate | None, children: int | None,
        served: Collection[str] | None, stopping: Callable[[], bool],
        recycle_reason: Callable[[int], str | None],
        jobs_left: Callable[[int], int | None] | None = None,
    ) -> None:
        self.slot = slot
        self.worker_id = worker_id
        self.settler = settler
        self.send = send
        self.gate = gate
        self.stopping = stopping
        self.recycle_reason = recycle_reason
        # How many more jobs the child runs before it recycles (--max-jobs-per-child),
        # after `after` more; None: no such limit. A claim never takes more: a bite
        # counted from the durations alone would carry a child past its limit.
        self.jobs_left = jobs_left or (lambda after: None)
        self.poll = PollInterval(settings.poll_min_s, settings.poll_max_s, settings.poll_step_s)
        self.durations = Durations()
        self.claim_size = ClaimSize(settings.batch_size, self.durations)
        # Where claims start in the claim index while walking it from its head is slow
        # (a held snapshot keeps the claimed rows' entries there): every claim this
        # child makes, alone, with a commit or sent ahead, goes through it.
        self.cursor = ClaimCursor()
        # Who share the ready jobs when the queue runs dry (sql._CLAIM, `take`): this pool's
        # children, as many as the master keeps when it forks this one (TTIN and
        # TTOU change that). Other hosts' are not known here.
        self.children = children or settings.effective_concurrency
        # The types this child claims: its master's served set (pool/served.py), in
        # every claim it makes (alone, with a commit, sent ahead). None: every type.
        self.types = tuple(sorted(served)) if served is not None else None
        self.paused = False  # the gate was closed at the last look
        self.claim_sent_at: float | None = None
        # What the last commit claimed for the loop (committed, reported to the
        # master): None when it did not try, and the loop claims by itself.
        self.next_jobs: list[Job] | None = None

    def may_claim(self) -> bool:
        """Whether the master keeps leases now (log once when that changes)."""
        is_open = self.gate is None or self.gate.is_open()
        if is_open == self.paused:
            self.paused = not is_open
            if self.paused:
                log.warning("worker %d: not claiming: its master cannot renew leases now",
                            self.slot)
            else:
                log.warning("worker %d: claiming again", self.slot)
        return is_open

    def limit(self, after: int = 0) -> int:
        """How many jobs to claim with a commit: 0 when the child must not take more
        work (it stops, recycles after this group and `after` more jobs, or its master
        cannot keep leases)."""
        if self.stopping() or self.recycle_reason(after) is not None or not self.may_claim():
            return 0
        return self.claim_size.limit(self.jobs_left(after))

    def claim_alone(self) -> list[Job]:
        """Claim the next batch in a transaction of its own (inside `bounded`). The caller
        hands the jobs to `take` once it returns: the claim has committed."""
        self.claim_sent_at = time.monotonic()
        return claim(self.worker_id, limit=self.claim_size.limit(self.jobs_left(0)),
                     types=self.types, children=self.children, cursor=self.cursor)

    def claim_in(self, conn: Connection) -> list[Job] | None:
        """Claim the next batch in the transaction that commits the last jobs of this one.

        Each commit is a WAL flush: a busy child that claimed in its own transaction
        would pay two per job, and pays one this way. None when the child must not
        take more work (it is stopping or recycles after this group: the loop then
        does what it would have done). The claim runs behind a savepoint: one that
        raises is rolled back alone, and the group's completions still commit."""
        limit = self.limit()
        if not limit:
            return None
        try:
            self.claim_sent_at = time.monotonic()
            return claim(self.worker_id, limit=limit, types=self.types, conn=conn,
                         savepoint=True, children=self.children, cursor=self.cursor)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            if conn.invalidated:
                raise  # the connection is gone: the completion cannot commit either
            log.warning("worker %d: claiming the next jobs with the completion failed (%s); "
                        "the completion commits alone", self.slot, describe_exception(exc))
            with db.translate_errors():
                conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {sql.CLAIM_SAVEPOINT}")
            return None

    def take(self, jobs: list[Job] | None, before: list[protocol.Message] | None = None,
             *, for_loop: bool = False) -> None:
        """A committed claim (None: no claim was tried): size the next bite, and tell the
        master what to heartbeat, after `before` in the same write. With `for_loop`,
        the loop runs these jobs next."""
        messages = list(before or [])
        if jobs is not None:
            self.claim_size.after_claim(len(jobs))
            if jobs:
                self.poll.reset()
                messages.append(protocol.Claimed(
                    [(j.id, self.worker_id, j.attempts) for j in jobs],
                    sent_at=self.claim_sent_at))
            if for_loop:
                self.next_jobs = jobs
        self.send(*messages)

    def give_back(self, jobs: list[Job], reason: str) -> None:
        """Claimed jobs this child will not start: back to the queue, unrun and uncharged."""
        log.warning("worker %d: %d job(s) claimed ahead given back: %s", self.slot,
                    len(jobs), reason)
        for job in jobs:
            self.settler.release(job, reason)
