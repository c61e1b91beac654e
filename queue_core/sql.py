"""Every statement on "WorkerJob", named, side by side.

Rules all of them follow:
- times come from the database clock, never from a worker's: `now()` where a
  statement runs alone, `statement_timestamp()` where it may run at the end
  of a job's transaction (`now()` there is when the handler began);
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
        (id, type, payload, priority, "availableAt", "maxAttempts", "idempotencyKey", "userId")
    SELECT j.id, j.type, j.payload, j.priority,
           now() + make_interval(secs => j.delay_s), j.max_attempts, j.key, j.user_id
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
    RETURNING j.*
"""
CLAIM = text(_CLAIM.format(type_filter=""))
CLAIM_TYPES = text(_CLAIM.format(type_filter="AND type = ANY(CAST(:types AS text[]))"))

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

# Each job fenced by its own holder and attempt. A row another session has
# locked (an operator's open transaction, a cascading DELETE, a handler that
# updates its own job) is skipped, not waited for: one locked row must not hold
# up the leases of every other job of the host. Each id comes back with whether
# its lease was renewed and whether it is still held at all (read without a
# lock: a locked row is "held, not renewed", retried at the next beat; only a
# job no longer held by this holder at this attempt is lost).
HEARTBEAT = text(
    """
    WITH h AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:lockers AS text[]),
                             CAST(:attempts AS int[])) AS h(id, locked_by, attempts)
    ), free AS (
        SELECT j.id FROM "WorkerJob" AS j JOIN h ON j.id = h.id
        WHERE j.status = 'PROCESSING' AND j."lockedBy" = h.locked_by AND j.attempts = h.attempts
        FOR UPDATE OF j SKIP LOCKED
    ), renewed AS (
        UPDATE "WorkerJob" AS j SET "lockedAt" = statement_timestamp()
        FROM free WHERE j.id = free.id
        RETURNING j.id
    )
    SELECT h.id,
           EXISTS (SELECT 1 FROM renewed AS r WHERE r.id = h.id) AS renewed,
           EXISTS (SELECT 1 FROM "WorkerJob" AS j
                   WHERE j.id = h.id AND j.status = 'PROCESSING'
                     AND j."lockedBy" = h.locked_by AND j.attempts = h.attempts) AS held
    FROM h
    """
)

# -- recovery ------------------------------------------------------------------

# Liveness comes from the heartbeat, not from when the job started
# (docs/lessons.md "A rescue by age alone runs live jobs twice"). The lost run counts
# as an attempt, so a job that kills its host every time ends in DEAD_LETTER
# (docs/lessons.md "Poison jobs loop forever without accounting").
RECOVER_STUCK = text(
    """
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
    SET status = CASE WHEN j.attempts < j."maxAttempts"
                      THEN 'PENDING' ELSE 'DEAD_LETTER' END::"JobStatus",
        "lastError" = format(
            'worker %s stopped sending heartbeats during attempt %s of %s '
            '(last heartbeat %s, stuck timeout %s s)%s',
            COALESCE(j."lockedBy", 'unknown'), j.attempts, j."maxAttempts",
            to_char(COALESCE(j."lockedAt", j."startedAt") AT TIME ZONE 'UTC',
                    'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            :timeout_s,
            CASE WHEN j.attempts < j."maxAttempts" THEN '; retrying'
                 ELSE '; no attempts left' END),
        "availableAt" = now(),
        "completedAt" = CASE WHEN j.attempts < j."maxAttempts" THEN NULL ELSE now() END,
        "lockedAt" = NULL, "lockedBy" = NULL
    FROM stuck
    WHERE j.id = stuck.id AND j.status = 'PROCESSING'
    RETURNING j.id, j.status
    """
)

# -- reading and maintenance -------------------------------------------------------

GET_JOB = text('SELECT * FROM "WorkerJob" WHERE id = :id')

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
    SET status = 'PENDING', attempts = 0, "availableAt" = now(), "completedAt" = NULL,
        "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL
    WHERE status = 'DEAD_LETTER' {filter}
    RETURNING id
"""
RETRY_DEAD_IDS = text(_RETRY_DEAD.format(filter="AND id = ANY(CAST(:ids AS text[]))"))
RETRY_DEAD_TYPE = text(_RETRY_DEAD.format(filter="AND type = :type"))
RETRY_DEAD_ALL = text(_RETRY_DEAD.format(filter=""))
