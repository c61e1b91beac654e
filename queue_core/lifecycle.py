"""The life of a claimed job: claim, heartbeat, then complete, fail or release.

Every change after the claim is fenced (see `sql.py`): it touches the row
only while it is PROCESSING, held by the same worker, at the same attempt.
A worker whose job was rescued and handed to another learns that it lost the
job (False / None) and cannot overwrite the other's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause
from sqlalchemy.orm import Session

from skiplock.queue_core import accounting, sql
from skiplock.queue_core.backoff import backoff_s
from skiplock.queue_core.claim_cursor import ClaimCursor
from skiplock.queue_core.database.arrays import flag_array, number_array, text_array
from skiplock.queue_core.database.db import Joinable, connect, driver_sql, run_on_driver
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import policy
from skiplock.queue_core.jobs import Fenced, Job, JobStatus, Progress
from skiplock.queue_core.storable import MAX_ERROR_CHARS, storable_json, storable_text

log = logging.getLogger("skiplock.queue")

MAX_ERROR_LENGTH = MAX_ERROR_CHARS


def claim(worker_id: str, limit: int = 1, types: Sequence[str] | None = None,
          conn: Joinable | None = None, *, savepoint: bool = False,
          children: int = 1, cursor: ClaimCursor | None = None) -> list[Job]:
    """Take up to `limit` ready jobs (highest priority, then oldest) for `worker_id`.

    With `types`, only jobs of those types (a pool's served set, pool/served.py).
    With `savepoint` (inside `conn`'s transaction) the claim runs behind
    `sql.CLAIM_SAVEPOINT`: if it raises, rolling back to it keeps the rest of
    the transaction. With `children` (a pool's size) it takes no more than that
    share of the ready jobs, rounded up (`sql._CLAIM`, its `take`). With `cursor`, the
    claim starts where the cursor says and tells it what it took
    (queue_core/claim_cursor.py)."""
    if not worker_id:
        raise InvalidJob("worker_id must be a non-empty string")
    if limit < 1:
        return []
    params: dict[str, Any] = {"worker_id": worker_id, "limit": limit,
                              "children": max(1, children)}
    behind_savepoint = savepoint and conn is not None
    if types is not None and not types:
        return []
    segments = cursor.segments() if cursor is not None else None
    if segments is not None:
        params.update(segments)
    statement = _CLAIMS[(types is not None, behind_savepoint, segments is not None)]
    if types is not None:
        params["types"] = types_param(types)
    names, rows = run_on_driver(conn, statement, params)
    mappings = [dict(zip(names, row, strict=True)) for row in rows]
    jobs = _in_claim_order([Job.from_mapping(m) for m in mappings])
    if cursor is not None:
        cursor.claimed(jobs, _claim_s(mappings), from_head=segments is None)
    return jobs


# (by types, behind a savepoint, from a cursor's segments) -> the claim
_CLAIMS = {
    (False, False, False): sql.CLAIM, (False, True, False): sql.CLAIM_AFTER_SAVEPOINT,
    (True, False, False): sql.CLAIM_TYPES, (True, True, False): sql.CLAIM_TYPES_AFTER_SAVEPOINT,
    (False, False, True): sql.CLAIM_FROM, (False, True, True): sql.CLAIM_FROM_AFTER_SAVEPOINT,
    (True, False, True): sql.CLAIM_TYPES_FROM,
    (True, True, True): sql.CLAIM_TYPES_FROM_AFTER_SAVEPOINT,
}


def _claim_s(mappings: Sequence[Mapping[str, Any]]) -> float | None:
    """The server's time to the claim's last row (`sql._CLAIM`'s claim_s); None when
    nothing was claimed."""
    times = [float(m["claim_s"]) for m in mappings if m.get("claim_s") is not None]
    return max(times) if times else None


def _in_claim_order(jobs: list[Job]) -> list[Job]:
    """RETURNING gives no order; jobs are handed out in the claim's."""
    jobs.sort(key=lambda j: (-j.priority, j.available_at or 0, j.id))
    return jobs


def _fence(job: Fenced) -> dict[str, Any]:
    return {"id": job.id, "locked_by": job.locked_by, "attempts": job.attempts}


def clean_error(error: Any) -> str:
    """lastError as PostgreSQL can store it (queue_core/storable.py): NUL and lone
    surrogates escaped, at most 64 Ki characters, the cut marked."""
    return storable_text(error if error is not None else "unknown error") or "unknown error"


def complete(job: Fenced, result: Any = None,
             conn: Joinable | None = None) -> bool:
    """Mark the job COMPLETED; False if it was no longer ours (nothing changed)."""
    encoded = storable_json(result)
    with connect(conn, autocommit=True) as c:
        done = c.execute(sql.COMPLETE, {**_fence(job), "result": encoded}).rowcount == 1
    if not done:
        log.warning("job %s was lost before it completed; its result is discarded", job.id,
                    extra={"job_id": job.id, "worker": job.locked_by})
    return done


def complete_many(jobs: Sequence[tuple[Fenced, Any]],
                  conn: Joinable | None = None, *, flush: bool = True) -> set[str]:
    """Mark each (job, result) COMPLETED in one statement; return the ids that were
    still ours (those missing were lost: nothing was changed for them).

    `flush=False`: the statement's transaction commits without waiting for the
    WAL flush (sql.COMPLETE_MANY_NO_FLUSH says when that is safe)."""
    if not jobs:
        return set()
    statement = sql.COMPLETE_MANY if flush else sql.COMPLETE_MANY_NO_FLUSH
    _, rows = run_on_driver(conn, statement, _completions(jobs))
    done = {row[0] for row in rows}
    _warn_lost(jobs, done)
    return done


def complete_many_statement(jobs: Sequence[tuple[Fenced, Any]]) -> tuple[str, dict[str, Any]]:
    """`complete_many(jobs, flush=False)`'s statement (as the driver takes it) and
    parameters, for a caller that sends it on a connection of its own (pool/ahead.py)."""
    return driver_sql(sql.COMPLETE_MANY_NO_FLUSH), _completions(jobs)


def complete_many_result(jobs: Sequence[tuple[Fenced, Any]],
                         rows: list[tuple[Any, ...]]) -> set[str]:
    """What `complete_many_statement`'s statement answered: the ids still ours."""
    done = {row[0] for row in rows}
    _warn_lost(jobs, done)
    return done


def cancelled_among(job_ids: Sequence[str], conn: Joinable | None = None) -> set[str]:
    """Which of these jobs an operator's cancel has ended."""
    if not job_ids:
        return set()
    _, rows = run_on_driver(conn, sql.CANCELLED_AMONG, {"ids": text_array(list(job_ids))})
    return {row[0] for row in rows}


def release_claimed_statement(jobs: Sequence[Fenced], worker_id: str,
                              reason: str) -> tuple[str, dict[str, Any]]:
    """The statement (as the driver takes it) that gives these claimed, never started
    jobs back, uncharged, for a caller that sends it on a connection of its own."""
    return driver_sql(sql.RELEASE_CLAIMED), {
        "ids": text_array([j.id for j in jobs]),
        "attempts": number_array([j.attempts for j in jobs]),
        "locked_by": worker_id, "reason": clean_error(reason)}


def complete_and_claim(jobs: Sequence[tuple[Fenced, Any]], worker_id: str,
                       limit: int, children: int = 1,
                       types: Sequence[str] | None = None,
                       cursor: ClaimCursor | None = None) -> tuple[set[str], list[Job]]:
    """Complete these jobs and claim up to `limit` more for `worker_id` (of `types`
    only, when given; from where `cursor` says, when given), in one statement that
    commits by itself: for jobs that wrote nothing to the database (a pool child's
    group, pool/child.py). Returns the ids that were still ours and the claimed jobs,
    in the claim's order."""
    statement, params = _complete_and_claim(jobs, worker_id, limit, children, types, cursor)
    names, rows = run_on_driver(None, statement, params)
    return complete_and_claim_result(jobs, names, rows, cursor,
                                     from_head="seg_hi" not in params)


def complete_and_claim_statement(jobs: Sequence[tuple[Fenced, Any]], worker_id: str,
                                 limit: int, children: int = 1,
                                 types: Sequence[str] | None = None,
                                 cursor: ClaimCursor | None = None,
                                 ) -> tuple[str, dict[str, Any]]:
    """`complete_and_claim`'s statement (as the driver takes it) and parameters, for a
    caller that sends it on a connection of its own (pool/ahead.py). Whether it
    claims from the head goes to `complete_and_claim_result` (`from_head`): no
    "seg_hi" among the parameters."""
    statement, params = _complete_and_claim(jobs, worker_id, limit, children, types, cursor)
    return driver_sql(statement), params


def _complete_and_claim(jobs: Sequence[tuple[Fenced, Any]], worker_id: str, limit: int,
                        children: int, types: Sequence[str] | None,
                        cursor: ClaimCursor | None,
                        ) -> tuple[TextClause, dict[str, Any]]:
    params = {**_completions(jobs), "worker_id": worker_id, "limit": max(1, limit),
              "children": max(1, children)}
    segments = cursor.segments() if cursor is not None else None
    if segments is not None:
        params.update(segments)
    if types is None:
        return (sql.COMPLETE_AND_CLAIM if segments is None else sql.COMPLETE_AND_CLAIM_FROM,
                params)
    params["types"] = types_param(types)
    return (sql.COMPLETE_AND_CLAIM_TYPES if segments is None
            else sql.COMPLETE_AND_CLAIM_TYPES_FROM, params)


def types_param(types: Sequence[str]) -> str:
    """The `:types` of a claim: an array literal (queue_core/database/arrays.py). A string is
    one type, not a sequence of one-letter types."""
    return text_array([types] if isinstance(types, str) else list(types))


def complete_and_claim_result(jobs: Sequence[tuple[Fenced, Any]], names: list[str],
                              rows: list[tuple[Any, ...]], cursor: ClaimCursor | None = None,
                              *, from_head: bool = True) -> tuple[set[str], list[Job]]:
    """What `complete_and_claim`'s statement answered: the ids that were still ours
    and the claimed jobs, in the claim's order (told to `cursor`, when given)."""
    done = set(rows[0][0] or ()) if rows else set()
    _warn_lost(jobs, done)
    mappings = [dict(zip(names[1:], row[1:], strict=True)) for row in rows if row[1] is not None]
    claimed = _in_claim_order([Job.from_claim(m) for m in mappings])
    if cursor is not None:
        cursor.claimed(claimed, _claim_s(mappings), from_head=from_head)
    return done, claimed


def _completions(jobs: Sequence[tuple[Fenced, Any]]) -> dict[str, Any]:
    # Array literals, not lists: queue_core/database/arrays.py.
    return {"ids": text_array([j.id for j, _ in jobs]),
            "lockers": text_array([j.locked_by for j, _ in jobs]),
            "attempts": number_array([j.attempts for j, _ in jobs]),
            "results": text_array([storable_json(r) for _, r in jobs])}


def _warn_lost(jobs: Sequence[tuple[Fenced, Any]], done: set[str]) -> None:
    for job, _ in jobs:
        if job.id not in done:
            log.warning("job %s was lost before it completed; its result is discarded", job.id,
                        extra={"job_id": job.id, "worker": job.locked_by})


def fail(job: Fenced, error: Any, retry: bool = True,
         conn: Joinable | None = None, checkpoint: str | None = None) -> str | None:
    """Record a failed attempt: PENDING after backoff if attempts are left and `retry`,
    else DEAD_LETTER. Returns the new status, or None if the job was no longer ours.

    `checkpoint`: the run's latest, as JSON text (queue_core/features/checkpoints.py),
    written in the same fenced change; None keeps the row's."""
    params = {**_fence(job), "error": clean_error(error), "retry": bool(retry),
              "backoff_s": policy.backoff_for(getattr(job, "type", None), job.attempts),
              "checkpoint": checkpoint}
    with connect(conn, autocommit=True) as c:
        row = c.execute(sql.FAIL, params).first()
    if row is None:
        log.warning("job %s was lost before it failed; this outcome is discarded", job.id,
                    extra={"job_id": job.id, "worker": job.locked_by})
        return None
    return str(row.status.value if isinstance(row.status, JobStatus) else row.status)


def release(job: Fenced, reason: str,
            conn: Joinable | None = None) -> bool:
    """Give the job back to the queue now, with its attempt, because it never ran to an end
    (the pool shut down). False if it was no longer ours."""
    with connect(conn, autocommit=True) as c:
        return c.execute(sql.RELEASE, {**_fence(job), "reason": clean_error(reason)}).rowcount == 1


def interrupt(job: Fenced, reason: str,
              conn: Connection | Session | None = None,
              checkpoint: str | None = None) -> str | None:
    """The run was cut short by something other than the job (queue_core/accounting.py).

    Returns "released" (a free interruption: the attempt given back), "retried" or
    "dead_lettered" (charged like a failure), or None if the job was no longer ours.
    `checkpoint` as `fail`'s."""
    params = {**_fence(job), "reason": clean_error(reason),
              "free": accounting.FREE_INTERRUPTIONS,
              "free_backoff_s": accounting.interruption_backoff_base_s(),
              "backoff_s": backoff_s(job.attempts), "checkpoint": checkpoint}
    with connect(conn, autocommit=True) as c:
        row = c.execute(sql.INTERRUPT, params).first()
    if row is None:
        return None
    if row.attempts < job.attempts:
        return "released"
    return "retried" if str(row.status) == "PENDING" else "dead_lettered"


def release_unstarted(worker_id: str, started: Sequence[str], reason: str,
                      conn: Connection | Session | None = None) -> list[str]:
    """Give back every job `worker_id` claimed and never started (not in `started`)."""
    with connect(conn, autocommit=True) as c:
        rows = c.execute(sql.RELEASE_UNSTARTED, {"locked_by": worker_id,
                                                 "started": list(started),
                                                 "reason": clean_error(reason)})
        return [row.id for row in rows]


@dataclass(frozen=True)
class Renewal:
    """What one heartbeat did to each lease, and which of the jobs an operator cancelled."""

    renewed: frozenset[str]  # "lockedAt" is now
    busy: frozenset[str]  # still ours, but another session holds the row: try again soon
    gone: frozenset[str]  # no longer held by this holder at this attempt: lost
    cancel_requested: frozenset[str] = frozenset()  # held, and `skiplock cancel` asked to stop it
    fresh: frozenset[str] = frozenset()  # still ours; not to be written this time, and was not

    @property
    def held(self) -> frozenset[str]:
        return self.renewed | self.busy | self.fresh


def renew_leases(jobs: Iterable[Fenced], progress: Mapping[str, Progress] | None = None,
                 conn: Joinable | None = None,
                 write: Sequence[bool] | None = None,
                 checkpoints: Mapping[str, str] | None = None) -> Renewal:
    """Refresh "lockedAt" of the given jobs in one statement that waits for no row lock,
    writing each renewed job's latest progress and checkpoint (JSON text, by job id;
    absent ids keep theirs) and reading cancel requests.

    `write` (one flag per job, default all): the leases to refresh; the others are
    only read, to learn whether they are still held and whether to cancel them."""
    jobs = list(jobs)
    if not jobs:
        return Renewal(frozenset(), frozenset(), frozenset())
    progress = progress or {}
    reports = [progress.get(j.id) for j in jobs]
    params = {"ids": text_array([j.id for j in jobs]),
              "lockers": text_array([j.locked_by for j in jobs]),
              "attempts": number_array([j.attempts for j in jobs]),
              "progress": number_array([r.fraction if r else None for r in reports]),
              "messages": text_array([r.message if r else None for r in reports]),
              "write": flag_array([True] * len(jobs) if write is None else write),
              # '{}' when none: unnest pads it with NULLs, which keep every row's.
              "checkpoints": text_array([checkpoints.get(j.id) for j in jobs])
              if checkpoints else "{}"}
    with connect(conn, autocommit=True) as c:
        rows = c.execute(sql.HEARTBEAT, params).fetchall()
    renewed = frozenset(r.id for r in rows if r.renewed)
    busy = frozenset(r.id for r in rows if r.held and r.write and not r.renewed)
    fresh = frozenset(r.id for r in rows if r.held and not r.write)
    gone = frozenset(r.id for r in rows if not r.held and not r.renewed)
    cancelled = frozenset(r.id for r in rows if r.held and r.cancel_requested)
    return Renewal(renewed, busy, gone, cancelled, fresh)


def heartbeat(jobs: Iterable[Fenced], conn: Joinable | None = None) -> set[str]:
    """Refresh "lockedAt" of the given jobs in one statement; return the ids still held
    (a job whose row another session has locked is held, though not refreshed)."""
    return set(renew_leases(jobs, conn=conn).held)
