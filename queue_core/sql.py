"""Every statement on "WorkerJob", named, side by side.

Rules all of them follow:
- times come from the database clock, never from a worker's: `now()` where a
  statement runs alone, `statement_timestamp()` where it may run at the end
  of a job's transaction or of a caller's (`now()` there is when the
  transaction began: a job enqueued with a delay at the end of a five-minute
  transaction would be due at once);
- every state change of a claimed job re-checks in its own WHERE that the row
  is still PROCESSING, held by this worker, at this attempt (docs/lessons.md: a
  rescue can race a completion); zero rows changed means the job was lost;
- every value is a bound parameter.
"""

from __future__ import annotations

from sqlalchemy import text

NOTIFY_CHANNEL = "skiplock_jobs"

# A child's boot check: the table exists and this role may read it.
PROBE = text('SELECT 1 FROM "WorkerJob" LIMIT 0')

# -- enqueue -----------------------------------------------------------------

# One round trip for a whole batch. ON CONFLICT DO NOTHING makes idempotency
# keys atomic (docs/lessons.md: check-then-insert races); the ids of the rows that
# were skipped are looked up with EXISTING_BY_KEY, in a new statement whose
# snapshot sees a conflicting row that a concurrent transaction just committed.
INSERT_JOBS = text(
    """
    INSERT INTO "WorkerJob"
        (id, type, payload, priority, "availableAt", "maxAttempts", "idempotencyKey", "userId",
         "createdAt")
    SELECT j.id, j.type, j.payload, j.priority,
           statement_timestamp() + make_interval(secs => j.delay_s), j.max_attempts, j.key,
           j.user_id, statement_timestamp()
    FROM unnest(
        CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]),
        CAST(:priorities AS int[]), CAST(:delays AS float8[]), CAST(:max_attempts AS int[]),
        CAST(:keys AS text[]), CAST(:user_ids AS text[])
    ) WITH ORDINALITY AS j(id, type, payload, priority, delay_s, max_attempts, key, user_id, ord)
    ORDER BY j.ord
    ON CONFLICT ("idempotencyKey") DO NOTHING
    RETURNING id
    """
)

EXISTING_BY_KEY = text(
    """
    SELECT "idempotencyKey" AS key, id FROM "WorkerJob"
    WHERE "idempotencyKey" = ANY(CAST(:keys AS text[]))
    """
)

# -- the life of a claimed job -------------------------------------------------

# One statement: lock ready rows in index order, skipping rows other workers
# hold, and mark them ours. The CTE is the fence that keeps the UPDATE to the
# LIMIT (docs/lessons.md "The claim is one statement").
# Paused types (`skiplock pause`) are skipped by asking a plpgsql function about
# each candidate while the partial claim index gives the order; why a function
# and not a join: alembic/versions/0003_ops.py.
# statement_timestamp(), not now(): a pool child also claims its next jobs at the
# end of a finished job's transaction (pool/child.py), where now() is when that
# transaction began, maybe minutes ago. A lease dated then would look stuck to
# recovery before the first heartbeat, and jobs that became ready meanwhile would
# be skipped. In an autocommit claim the two are the same instant.
# The payload comes back as text, decoded per job by `Job.from_row`: a row the
# driver could not decode (JSON nested too deeply, a number too long for
# Python) would make the whole claim raise after it committed, and fail every
# job of the batch, or the completed job whose transaction claimed it.
_CLAIM = """
    WITH ready AS (
        SELECT id FROM "WorkerJob"
        WHERE status = 'PENDING' AND "availableAt" <= statement_timestamp() {type_filter}
          AND NOT skiplock_type_paused(type)
        ORDER BY priority DESC, "availableAt" ASC
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE "WorkerJob" AS j
    SET status = 'PROCESSING', attempts = j.attempts + 1,
        "lockedAt" = statement_timestamp(), "startedAt" = statement_timestamp(),
        "lockedBy" = :worker_id
    FROM ready
    WHERE j.id = ready.id
    RETURNING j.id, j.type, j.payload::text AS payload_json, j.status, j.priority,
        j."availableAt", j.attempts, j."maxAttempts", j."lastError", j."lockedAt", j."lockedBy",
        j."idempotencyKey", j."userId", j."createdAt", j."startedAt", j."completedAt",
        j.interruptions
"""
CLAIM = text(_CLAIM.format(type_filter=""))
CLAIM_TYPES = text(_CLAIM.format(type_filter="AND type = ANY(CAST(:types AS text[]))"))
# The claim a busy child makes in the transaction that completes its last job,
# behind a savepoint set in the same round trip: if the claim fails, the child
# rolls back to the savepoint and the completion still commits.
CLAIM_SAVEPOINT = "skiplock_claim"
CLAIM_AFTER_SAVEPOINT = text(f"SAVEPOINT {CLAIM_SAVEPOINT}; " + _CLAIM.format(type_filter=""))

_FENCE = """
    id = :id AND status = 'PROCESSING' AND "lockedBy" = :locked_by AND attempts = :attempts
"""

COMPLETE = text(
    f"""
    UPDATE "WorkerJob"
    SET status = 'COMPLETED', "completedAt" = statement_timestamp(),
        "lockedAt" = NULL, "lockedBy" = NULL, result = CAST(:result AS jsonb)
    WHERE {_FENCE}
    """
)

# :retry is decided by the caller (the handler asked for it); whether attempts
# are left is decided here, on the row as it is now.
FAIL = text(
    f"""
    UPDATE "WorkerJob"
    SET status = CASE WHEN :retry AND attempts < "maxAttempts"
                      THEN 'PENDING' ELSE 'DEAD_LETTER' END::"JobStatus",
        "availableAt" = CASE WHEN :retry AND attempts < "maxAttempts"
                             THEN statement_timestamp() + make_interval(secs => :backoff_s)
                             ELSE "availableAt" END,
        "completedAt" = CASE WHEN :retry AND attempts < "maxAttempts"
                             THEN NULL ELSE statement_timestamp() END,
        "lastError" = :error, "lockedAt" = NULL, "lockedBy" = NULL
    WHERE {_FENCE}
    RETURNING status, "availableAt"
    """
)

# A job that never ran to its end because the pool shut down: back in the
# queue at once, and the attempt is given back.
RELEASE = text(
    f"""
    UPDATE "WorkerJob"
    SET status = 'PENDING', attempts = attempts - 1, "availableAt" = statement_timestamp(),
        "lastError" = :reason, "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL
    WHERE {_FENCE}
    """
)

# A run cut short by something other than the job (queue_core/accounting.py):
# its first :free interruptions give the attempt back and count one more, with
# a back-off that doubles each time; later ones are charged like FAIL.
_FREE = 'COALESCE(interruptions, 0) < :free'
INTERRUPT = text(
    f"""
    UPDATE "WorkerJob"
    SET status = CASE WHEN {_FREE} OR attempts < "maxAttempts"
                      THEN 'PENDING' ELSE 'DEAD_LETTER' END::"JobStatus",
        attempts = CASE WHEN {_FREE} THEN attempts - 1 ELSE attempts END,
        interruptions = CASE WHEN {_FREE} THEN COALESCE(interruptions, 0) + 1
                             ELSE interruptions END,
        "availableAt" = CASE
            WHEN {_FREE} THEN statement_timestamp()
                 + make_interval(secs => :free_backoff_s * power(2, COALESCE(interruptions, 0)))
            WHEN attempts < "maxAttempts"
                 THEN statement_timestamp() + make_interval(secs => :backoff_s)
            ELSE "availableAt" END,
        "completedAt" = CASE WHEN {_FREE} OR attempts < "maxAttempts"
                             THEN NULL ELSE statement_timestamp() END,
        "lastError" = CASE
            WHEN {_FREE} THEN format('%s (interruption %s of %s free: attempt %s not counted)',
                                    CAST(:reason AS text), COALESCE(interruptions, 0) + 1,
                                    :free, attempts)
            ELSE format('%s (its %s free interruptions are used up: attempt %s/%s counted%s)',
                        CAST(:reason AS text), :free, attempts, "maxAttempts",
                        CASE WHEN attempts < "maxAttempts" THEN '; retrying'
                             ELSE '; no attempts left' END) END,
        "lockedAt" = NULL, "lockedBy" = NULL
    WHERE {_FENCE}
    RETURNING status, attempts
    """
)

# Every job a (dead) worker claimed but never started, whether its master heard
# of the claim or not: a child that dies between its claim's commit and its
# report of it leaves rows only this statement finds. Nothing ran: the attempt
# is given back, nothing is counted. :started are the ids it did start.
RELEASE_UNSTARTED = text(
    """
    UPDATE "WorkerJob"
    SET status = 'PENDING', attempts = attempts - 1, "availableAt" = statement_timestamp(),
        "lastError" = :reason, "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL
    WHERE status = 'PROCESSING' AND "lockedBy" = :locked_by
      AND NOT (id = ANY(CAST(:started AS text[])))
    RETURNING id
    """
)

# Each job fenced by its own holder and attempt; what comes back is still held.
HEARTBEAT = text(
    """
    UPDATE "WorkerJob" AS j SET "lockedAt" = statement_timestamp()
    FROM unnest(CAST(:ids AS text[]), CAST(:lockers AS text[]), CAST(:attempts AS int[]))
         AS h(id, locked_by, attempts)
    WHERE j.id = h.id AND j.status = 'PROCESSING'
      AND j."lockedBy" = h.locked_by AND j.attempts = h.attempts
    RETURNING j.id
    """
)

# -- recovery ------------------------------------------------------------------

# Liveness comes from the heartbeat, not from when the job started
# (docs/lessons.md "A rescue by age alone runs live jobs twice"). A rescue is an
# interruption (queue_core/accounting.py): free for the first :free of a job,
# since a host that died, or a master whose heartbeats an outage held up, is not
# the job's fault; charged after that, so a job that kills its host every time
# still ends in DEAD_LETTER (docs/lessons.md "Poison jobs loop forever without
# accounting").
_STUCK_FREE = 'COALESCE(j.interruptions, 0) < :free'
RECOVER_STUCK = text(
    f"""
    WITH stuck AS (
        SELECT id FROM "WorkerJob"
        WHERE status = 'PROCESSING'
          AND COALESCE("lockedAt", "startedAt", "createdAt")
              < now() - make_interval(secs => :timeout_s)
        ORDER BY "lockedAt"
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    UPDATE "WorkerJob" AS j
    SET status = CASE WHEN {_STUCK_FREE} OR j.attempts < j."maxAttempts"
                      THEN 'PENDING' ELSE 'DEAD_LETTER' END::"JobStatus",
        attempts = CASE WHEN {_STUCK_FREE} THEN j.attempts - 1 ELSE j.attempts END,
        interruptions = CASE WHEN {_STUCK_FREE} THEN COALESCE(j.interruptions, 0) + 1
                             ELSE j.interruptions END,
        "lastError" = format(
            'worker %s stopped sending heartbeats during attempt %s of %s '
            '(last heartbeat %s, stuck timeout %s s)%s',
            COALESCE(j."lockedBy", 'unknown'), j.attempts, j."maxAttempts",
            to_char(COALESCE(j."lockedAt", j."startedAt") AT TIME ZONE 'UTC',
                    'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            :timeout_s,
            CASE WHEN {_STUCK_FREE}
                 THEN format('; retrying (interruption %s of %s free: attempt not counted)',
                             COALESCE(j.interruptions, 0) + 1, :free)
                 WHEN j.attempts < j."maxAttempts"
                 THEN format('; retrying (its %s free interruptions are used up: '
                             'attempt counted)', :free)
                 ELSE format('; no attempts left (its %s free interruptions are used up)',
                             :free) END),
        "availableAt" = CASE
            WHEN {_STUCK_FREE} THEN now()
                 + make_interval(secs => :free_backoff_s * power(2, COALESCE(j.interruptions, 0)))
            WHEN j.attempts < j."maxAttempts" THEN now() + make_interval(
                 secs => LEAST(:backoff_cap_s, :backoff_base_s * power(2, LEAST(j.attempts, 30))))
            ELSE j."availableAt" END,
        "completedAt" = CASE WHEN {_STUCK_FREE} OR j.attempts < j."maxAttempts"
                             THEN NULL ELSE now() END,
        "lockedAt" = NULL, "lockedBy" = NULL
    FROM stuck
    WHERE j.id = stuck.id AND j.status = 'PROCESSING'
    RETURNING j.id, j.status
    """
)

# -- reading and maintenance -------------------------------------------------------

# payload and result as text, decoded by `Job.from_row`: `skiplock job ID` must
# show a job whose JSON Python cannot decode, not crash on it.
GET_JOB = text(
    """
    SELECT id, type, payload::text AS payload_json, status, priority, "availableAt", attempts,
           "maxAttempts", "lastError", "lockedAt", "lockedBy", "idempotencyKey", "userId",
           "createdAt", "startedAt", "completedAt", result::text AS result_json, interruptions
    FROM "WorkerJob" WHERE id = :id
    """
)

COUNT_BY_STATUS = text('SELECT status::text AS status, count(*) AS n FROM "WorkerJob" GROUP BY 1')

PENDING_BY_TYPE = text(
    """
    SELECT type,
           count(*) FILTER (WHERE "availableAt" <= now()) AS ready,
           count(*) FILTER (WHERE "availableAt" > now()) AS scheduled,
           EXTRACT(EPOCH FROM now() - min("availableAt") FILTER (WHERE "availableAt" <= now()))
               AS oldest_ready_s
    FROM "WorkerJob" WHERE status = 'PENDING'
    GROUP BY type
    """
)

PROCESSING_BY_TYPE = text(
    """SELECT type, count(*) AS n FROM "WorkerJob" WHERE status = 'PROCESSING' GROUP BY type"""
)

# Small batches, each its own transaction: cleanup never holds many row locks
# on the hot table, and SKIP LOCKED keeps it out of the workers' way.
CLEANUP_BATCH = text(
    """
    WITH doomed AS (
        SELECT id FROM "WorkerJob"
        WHERE status = ANY(CAST(:statuses AS "JobStatus"[]))
          AND "completedAt" < now() - make_interval(secs => :older_than_s)
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM "WorkerJob" AS j USING doomed WHERE j.id = doomed.id
    """
)

_RETRY_DEAD = """
    UPDATE "WorkerJob"
    SET status = 'PENDING', attempts = 0, interruptions = NULL, "availableAt" = now(),
        "completedAt" = NULL,
        "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL
    WHERE status = 'DEAD_LETTER' {filter}
    RETURNING id
"""
RETRY_DEAD_IDS = text(_RETRY_DEAD.format(filter="AND id = ANY(CAST(:ids AS text[]))"))
RETRY_DEAD_TYPE = text(_RETRY_DEAD.format(filter="AND type = :type"))
RETRY_DEAD_ALL = text(_RETRY_DEAD.format(filter=""))
