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
- every value is a bound parameter;
- a statement about live jobs only (the claim, a job's changes while it runs,
  recovery, routing, the flow features) names the live part, "WorkerJobLive";
  one that may meet a finished job (a read by id or key, counts, listings, an
  operator's retry) and every insert name "WorkerJob" (migration 0022_history,
  docs/internals.md "History").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import TextClause, text

NOTIFY_CHANNEL = "skiplock_jobs"

# Every insert below wakes idle workers: a NOTIFY in the same query string, so
# one transaction with the insert (delivered at its commit, never for a
# rollback), placed first so that the query's result is the insert's. The
# table's trigger sends the same NOTIFY for producers that insert rows
# themselves, and stands aside when the query string already holds this text
# (migration 0011): through the trigger it cost a PL/pgSQL call per statement,
# about a tenth of a one-row enqueue.
WAKE = f"NOTIFY {NOTIFY_CHANNEL}; "
# Every insert of a job says it comes from skiplock (in its text, or in the NOTIFY
# that leads the EXECUTE of its prepared form): there a maxAttempts of 3 was given,
# where from Prisma or psql it is the column's default (migration 0017_policies).

# A child's boot check: the table exists and this role may read it.
PROBE = text('SELECT 1 FROM "WorkerJob" LIMIT 0')

# -- enqueue -----------------------------------------------------------------

# One round trip for a whole batch. ON CONFLICT DO NOTHING makes idempotency
# keys atomic (docs/lessons.md: check-then-insert races); the ids of the rows that
# were skipped are looked up with EXISTING_BY_KEY, in a new statement whose
# snapshot sees a conflicting row that a concurrent transaction just committed.
# A key whose job is in history (migration 0022_history: the live part's unique index
# does not see it) is left out by the NOT EXISTS, and looked up the same way. A job
# that a mover archives between the two (its row's move commits while this insert
# waits on the live index) makes the history's trigger raise unique_violation:
# `enqueue` tries once more (queue_core/enqueue.py, `KeyArchived`).
# A job with a concurrency key is inserted held back; a trigger lets it in if its
# key has a free slot (queue_core/features/limits.py). ON CONFLICT without a target: both
# "idempotencyKey" and the scoped "uniqueKey" (queue_core/features/unique.py) arbitrate.
# :trace_context is one value for the whole batch, NULL unless a span is current
# (queue_core/tracing.py): every job of one call is enqueued in the same span.
INSERT_JOBS = text(
    WAKE + """
    INSERT /*skiplock*/ INTO "WorkerJob"
        (id, type, payload, priority, "availableAt", "maxAttempts", "idempotencyKey", "userId",
         "createdAt", "concurrencyKey", "concurrencyLimit", "heldBack", "uniqueKey", "uniqueUntil",
         "traceContext", "fairKey", rate, "rateKey")
    SELECT j.id, j.type, j.payload, j.priority,
           statement_timestamp() + make_interval(secs => j.delay_s), j.max_attempts, j.key,
           j.user_id, statement_timestamp(),
           j.slot_key, j.slot_limit, CASE WHEN j.slot_key IS NOT NULL THEN true END,
           j.unique_key, statement_timestamp() + make_interval(secs => j.unique_s),
           CAST(:trace_context AS jsonb), j.fair_key, j.rate, j.rate_key
    FROM unnest(
        CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]),
        CAST(:priorities AS int[]), CAST(:delays AS float8[]), CAST(:max_attempts AS int[]),
        CAST(:keys AS text[]), CAST(:user_ids AS text[]), CAST(:slot_keys AS text[]),
        CAST(:slot_limits AS int[]), CAST(:unique_keys AS text[]), CAST(:unique_secs AS float8[]),
        CAST(:fair_keys AS text[]), CAST(:rates AS text[]), CAST(:rate_keys AS text[])
    ) WITH ORDINALITY AS j(id, type, payload, priority, delay_s, max_attempts, key, user_id,
                           slot_key, slot_limit, unique_key, unique_s, fair_key, rate, rate_key,
                           ord)
    WHERE j.key IS NULL
       OR NOT EXISTS (SELECT FROM "WorkerJobHistory" AS h WHERE h."idempotencyKey" = j.key)
    ORDER BY j.ord
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)

# The same for one job, which is what `enqueue()` writes: one row of plain values
# costs the server about a quarter less than unnest over one-element arrays. It must set
# the same columns, the same way, as INSERT_JOBS.
INSERT_JOB = text(
    WAKE + """
    INSERT /*skiplock*/ INTO "WorkerJob"
        (id, type, payload, priority, "availableAt", "maxAttempts", "idempotencyKey", "userId",
         "createdAt", "concurrencyKey", "concurrencyLimit", "heldBack", "uniqueKey", "uniqueUntil",
         "traceContext", "fairKey", rate, "rateKey")
    SELECT :id, :type, CAST(:payload AS jsonb), :priority,
           statement_timestamp() + make_interval(secs => CAST(:delay_s AS float8)),
           :max_attempts, CAST(:key AS text), :user_id, statement_timestamp(),
           :concurrency_key, CAST(:concurrency AS int),
           CASE WHEN CAST(:concurrency_key AS text) IS NOT NULL THEN true END,
           :unique_key,
           statement_timestamp() + make_interval(secs => CAST(:unique_s AS float8)),
           CAST(:trace_context AS jsonb), CAST(:fair_key AS text), CAST(:rate AS text),
           CAST(:rate_key AS text)
    WHERE CAST(:key AS text) IS NULL
       OR NOT EXISTS (SELECT FROM "WorkerJobHistory" AS h
                      WHERE h."idempotencyKey" = CAST(:key AS text))
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)

# A job with neither an idempotency key nor a scoped key, alone: nothing to
# arbitrate, so no ON CONFLICT (a speculative insertion costs the server more
# than a plain one) and no RETURNING (the id is ours). Written with positional
# parameters, to be prepared once on skiplock's own connection (queue_core/
# direct.py; a PREPAREd statement is one statement, so WAKE goes before its
# EXECUTE); INSERT_UNKEYED_JOB is the same with named parameters, for a
# caller's connection. Same columns, set the same way, as INSERT_JOB.
INSERT_UNKEYED_JOB_PARAMS = ("id", "type", "payload", "priority", "delay_s", "max_attempts",
                             "user_id", "concurrency_key", "concurrency", "trace_context")
INSERT_UNKEYED_JOB_POSITIONAL = """
    INSERT /*skiplock*/ INTO "WorkerJob"
        (id, type, payload, priority, "availableAt", "maxAttempts", "userId", "createdAt",
         "concurrencyKey", "concurrencyLimit", "heldBack", "traceContext")
    VALUES (CAST($1 AS text), CAST($2 AS text), CAST($3 AS jsonb), CAST($4 AS int),
            statement_timestamp() + make_interval(secs => CAST($5 AS float8)),
            CAST($6 AS int), CAST($7 AS text), statement_timestamp(), CAST($8 AS text),
            CAST($9 AS int), CASE WHEN CAST($8 AS text) IS NOT NULL THEN true END,
            CAST($10 AS jsonb))
    """
INSERT_UNKEYED_JOB = text(WAKE + re.sub(r"\$(\d+)",
                                        lambda m: ":" + INSERT_UNKEYED_JOB_PARAMS[int(m[1]) - 1],
                                        INSERT_UNKEYED_JOB_POSITIONAL))

# A batch of jobs none of which has a key: INSERT_JOBS without ON CONFLICT and
# RETURNING, for the same reason. A column of NULLs comes as an empty array
# ('{}'): unnest pads the shorter arrays with NULLs.
INSERT_UNKEYED_JOBS = text(
    WAKE + """
    INSERT /*skiplock*/ INTO "WorkerJob"
        (id, type, payload, priority, "availableAt", "maxAttempts", "userId", "createdAt",
         "concurrencyKey", "concurrencyLimit", "heldBack", "traceContext")
    SELECT j.id, j.type, j.payload, j.priority,
           statement_timestamp() + make_interval(secs => j.delay_s), j.max_attempts,
           j.user_id, statement_timestamp(),
           j.slot_key, j.slot_limit, CASE WHEN j.slot_key IS NOT NULL THEN true END,
           CAST(:trace_context AS jsonb)
    FROM unnest(
        CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]),
        CAST(:priorities AS int[]), CAST(:delays AS float8[]), CAST(:max_attempts AS int[]),
        CAST(:user_ids AS text[]), CAST(:slot_keys AS text[]), CAST(:slot_limits AS int[])
    ) WITH ORDINALITY AS j(id, type, payload, priority, delay_s, max_attempts, user_id,
                           slot_key, slot_limit, ord)
    ORDER BY j.ord
    """
)

EXISTING_BY_KEY = text(
    """
    SELECT "idempotencyKey" AS key, id FROM "WorkerJob"
    WHERE "idempotencyKey" = ANY(CAST(:keys AS text[]))
    """
)

# Scoped keys (queue_core/features/unique.py): a key is free again once its job ended
# (a window "while active") or its period is over; freed just before an enqueue
# of the same key, the row keeping all but the key.
FREE_UNIQUE_KEYS = text(
    """
    UPDATE "WorkerJobLive" SET "uniqueKey" = NULL
    WHERE "uniqueKey" = ANY(CAST(:keys AS text[]))
      AND CASE WHEN "uniqueUntil" IS NULL THEN status NOT IN ('PENDING', 'PROCESSING')
               ELSE "uniqueUntil" <= now() END
    """
)

EXISTING_BY_UNIQUE_KEY = text(
    """
    SELECT "uniqueKey" AS key, id FROM "WorkerJobLive"
    WHERE "uniqueKey" = ANY(CAST(:keys AS text[]))
    """
)

# -- the life of a claimed job -------------------------------------------------

# One statement: lock ready rows in index order, skipping rows other workers
# hold, and mark them ours. The CTE is the fence that keeps the UPDATE to the
# LIMIT (docs/lessons.md "The claim is one statement").
# Paused types (`skiplock pause`) are skipped by asking a plpgsql function about
# each candidate while the partial claim index gives the order; why a function
# and not a join: alembic/versions/0003_ops.py. The function is asked only when
# some type is paused: the uncorrelated EXISTS is an InitPlan, run once per
# statement, and OR stops at its answer. Each call is a query of its own, paid
# per candidate row for nothing in the usual case where nothing is paused
# (docs/benchmarks.md, "Figures behind the code"); the planner's estimate
# stays as fixed as the function's alone.
# statement_timestamp(), not now(): a pool child also claims its next jobs at the
# end of a finished job's transaction (pool/child.py), where now() is when that
# transaction began, maybe minutes ago. A lease dated then would look stuck to
# recovery before the first heartbeat, and jobs that became ready meanwhile would
# be skipped. In an autocommit claim the two are the same instant.
# The payload comes back as text, decoded per job by `Job.from_row`: a row the
# driver could not decode (JSON nested too deeply, a number too long for
# Python) would make the whole claim raise after it committed, and fail every
# job of the batch, or the completed job whose transaction claimed it.
def _features(prefix: str = "") -> str:
    """The columns of migration 0005_features that `Job` reads (a claimed job's cancel
    request, its concurrency key, its progress...)."""
    return ", ".join(f'{prefix}"{c}"' for c in (
        "cancelRequestedAt", "cancelledBy", "concurrencyKey", "concurrencyLimit", "heldBack",
        "uniqueKey", "uniqueUntil", "progress", "progressMessage", "snoozes"))


# The claim's ready rows come from `_FROM_HEAD` (the claim index from its head, as
# it always did) or `_FROM_SEGMENTS` (queue_core/claim_cursor.py): stretches of the
# index in its order, each a band of priorities from a remembered "availableAt" on,
# one index scan each, walked in order and only as far as the LIMIT needs.
_READY_WHERE = """status = 'PENDING' AND "heldBack" IS NULL
          AND "availableAt" <= statement_timestamp() {type_filter}
          AND (NOT EXISTS (SELECT FROM "WorkerJobPause") OR NOT skiplock_type_paused(type))"""
_FROM_HEAD = """
        SELECT {columns} FROM "WorkerJobLive"
        WHERE """ + _READY_WHERE + """
        ORDER BY priority DESC, "availableAt" ASC
        LIMIT {limit} {locking}"""
# A segment's bounds are parameters of the scan (runtime index keys): the scan of a
# band from its cursor starts at the cursor, never at the band's head, where the
# claimed rows' index entries lie until vacuum may remove them. Nested Loop walks
# the segments in the array's order and pulls from each only what the outer LIMIT
# still wants, so no row is locked that is not returned.
_FROM_SEGMENTS = """
        SELECT {outer}
        FROM unnest(CAST(:seg_hi AS integer[]), CAST(:seg_lo AS integer[]),
                    CAST(:seg_from AS timestamptz[])) AS seg (hi, lo, from_at)
        CROSS JOIN LATERAL (
            SELECT id, priority, "availableAt" FROM "WorkerJobLive"
            WHERE priority <= seg.hi AND priority >= seg.lo AND "availableAt" >= seg.from_at
              AND """ + _READY_WHERE + """
            ORDER BY priority DESC, "availableAt" ASC
            LIMIT {limit} {locking}) AS r
        LIMIT {limit}"""
# The claim, whole. `ready` locks up to :limit ready rows in the claim index's
# order, skipping rows that other claims hold. `take` keeps no more than this
# claimer's share of them. A pool child takes no more than its share of the
# ready jobs (:children, its pool's size, share them), so that a deep queue that
# runs dry (the end of a backfill, a burst) ends on every child at about the
# same time, not on one that still holds a full bite of work while its siblings
# are idle (docs/benchmarks.md, "Figures behind the code"). The share is
# counted when the claim runs, not from the claim before (a count a batch old
# had already been shared out by the siblings' own claims meanwhile); the count
# stops at as many as the children could take in full bites, walks the claim's
# index in its order (unordered, the planner read the LIMIT as a reason to scan
# the table from its start, among the finished rows), and includes the rows
# other claims in flight hold: it errs towards a larger share. The rows of
# `ready` beyond the share stay locked only until the claim commits. A claim for
# one child (:children = 1) takes all of `ready` and counts nothing. The UPDATE
# marks the share ours and dates the lease. `claim_s`: the server's time from the
# statement's start to the row (the walks are done by then), which tells the
# claimer whether walking the index from its head has become slow.
# {type_filter}: nothing, or `_TYPES`; {returning}: what the claimer reads;
# {source}: `_FROM_HEAD` or `_FROM_SEGMENTS`.
_CLAIM_TEMPLATE = """
    WITH ready AS ({ready}
    ), take AS (
        SELECT id FROM ready ORDER BY priority DESC, "availableAt" ASC
        LIMIT CASE WHEN :children <= 1 THEN :limit
                   ELSE (SELECT (count(*) + :children - 1) / :children FROM ({seen}
                         ) AS seen) END
    )
    UPDATE "WorkerJobLive" AS j
    SET status = 'PROCESSING', attempts = j.attempts + 1,
        "lockedAt" = statement_timestamp(), "startedAt" = statement_timestamp(),
        "lockedBy" = :worker_id
    FROM take
    WHERE j.id = take.id
    RETURNING {{returning}},
        EXTRACT(EPOCH FROM clock_timestamp() - statement_timestamp()) AS claim_s
"""


def _claim_of(source: str) -> str:
    """The claim with its ready rows from `source`; {type_filter} and {returning} left."""
    ready = source.format(columns='id, priority, "availableAt"', limit=":limit",
                          outer='r.id, r.priority, r."availableAt"',
                          locking="FOR UPDATE SKIP LOCKED", type_filter="{type_filter}")
    seen = source.format(columns="", outer="", limit=":limit * :children", locking="",
                         type_filter="{type_filter}")
    return _CLAIM_TEMPLATE.format(ready=ready, seen=seen)


_CLAIM = _claim_of(_FROM_HEAD)
_CLAIM_FROM = _claim_of(_FROM_SEGMENTS)
_WHOLE_JOB = """j.id, j.type, j.payload::text AS payload_json, j.status, j.priority,
        j."availableAt", j.attempts, j."maxAttempts", j."lastError", j."lockedAt", j."lockedBy",
        j."idempotencyKey", j."userId", j."createdAt", j."startedAt", j."completedAt",
        j.interruptions, j.checkpoint::text AS checkpoint_json,
        j."traceContext"::text AS trace_context, """ + _features("j.")
# What a pool child reads of a job it claims with its completions (`Job.from_claim`):
# the other 18 columns cost the server and the child, which turns them into Python
# values, CPU for every row, for nothing (docs/benchmarks.md, "Figures behind the code").
# The checkpoint is what the handler resumes from (queue_core/features/checkpoints.py),
# as text for the same reason as the payload; NULL, one byte of the row's answer,
# for a job that never checkpointed.
_CLAIMED_BY_POOL = """j.id, j.type, j.payload::text AS payload_json, j.priority, j."availableAt",
        j.attempts, j."maxAttempts", j."lockedBy", j."cancelRequestedAt",
        j.checkpoint::text AS checkpoint_json, j."traceContext"::text AS trace_context
"""

# A pool claims only the types it serves (pool/served.py), and so does a claim
# given `types`. The list goes in as a sub-SELECT, an InitPlan whose value the
# planner does not see: it then estimates the filter at a fixed selectivity and
# keeps walking the claim's index in its order, whatever the column's
# statistics say. Given as constants, a served type whose backlog grew since
# the last ANALYZE looked rare to it, and it read and sorted every pending row
# of that type, for every claim (docs/benchmarks.md, "Figures behind the code").
# Jobs of the types no live pool serves are
# parked out of the claim's index (PARK_UNSERVED): a filter walks over the
# ones that are not parked yet.
_TYPES = "AND type = ANY(CAST((SELECT CAST(:types AS text[])) AS text[]))"

CLAIM = text(_CLAIM.format(type_filter="", returning=_WHOLE_JOB))
CLAIM_TYPES = text(_CLAIM.format(type_filter=_TYPES, returning=_WHOLE_JOB))
# The same claims from a cursor's segments (queue_core/claim_cursor.py).
CLAIM_FROM = text(_CLAIM_FROM.format(type_filter="", returning=_WHOLE_JOB))
CLAIM_TYPES_FROM = text(_CLAIM_FROM.format(type_filter=_TYPES, returning=_WHOLE_JOB))
# The claim a busy child makes in the transaction that completes its last job,
# behind a savepoint set in the same round trip: if the claim fails, the child
# rolls back to the savepoint and the completion still commits.
CLAIM_SAVEPOINT = "skiplock_claim"
CLAIM_AFTER_SAVEPOINT = text(f"SAVEPOINT {CLAIM_SAVEPOINT}; "
                             + _CLAIM.format(type_filter="", returning=_WHOLE_JOB))
CLAIM_TYPES_AFTER_SAVEPOINT = text(f"SAVEPOINT {CLAIM_SAVEPOINT}; "
                                   + _CLAIM.format(type_filter=_TYPES, returning=_WHOLE_JOB))
CLAIM_FROM_AFTER_SAVEPOINT = text(f"SAVEPOINT {CLAIM_SAVEPOINT}; "
                                  + _CLAIM_FROM.format(type_filter="", returning=_WHOLE_JOB))
CLAIM_TYPES_FROM_AFTER_SAVEPOINT = text(
    f"SAVEPOINT {CLAIM_SAVEPOINT}; " + _CLAIM_FROM.format(type_filter=_TYPES,
                                                          returning=_WHOLE_JOB))


# A driver that binds parameters on the server (psycopg 3, under an application's
# SQLAlchemy engine) takes one statement per query string: the two statements that
# lead with another are sent without it. WAKE is left out, since the table's
# trigger sends the NOTIFY for a query string without it (migration 0011), at the
# cost of the trigger's call; the savepoint is sent first, as a query of its own.
_LEADS = (WAKE, f"SAVEPOINT {CLAIM_SAVEPOINT}; ")
_one_at_a_time: dict[TextClause, tuple[TextClause, ...]] = {}


def one_at_a_time(statement: TextClause) -> tuple[TextClause, ...]:
    """`statement` as the queries a server-binding driver takes, in order; the last
    one takes the parameters."""
    found = _one_at_a_time.get(statement)
    if found is None:
        before: list[TextClause] = []
        rest = statement.text
        if rest.startswith(WAKE):
            rest = rest[len(WAKE):]
        elif rest.startswith(_LEADS[1]):
            before.append(text(_LEADS[1].rstrip("; ")))
            rest = rest[len(_LEADS[1]):]
        found = _one_at_a_time[statement] = (*before, text(rest))
    return found

_FENCE = """
    id = :id AND status = 'PROCESSING' AND "lockedBy" = :locked_by AND attempts = :attempts
"""

# A completed job has nothing left to resume: its checkpoint (up to 8 KiB) would only
# weigh on the table until cleanup (queue_core/features/checkpoints.py).
COMPLETE = text(
    f"""
    UPDATE "WorkerJobLive"
    SET status = 'COMPLETED', "completedAt" = statement_timestamp(),
        "lockedAt" = NULL, "lockedBy" = NULL, result = CAST(:result AS jsonb),
        checkpoint = NULL
    WHERE {_FENCE}
    """
)

# The completions of a pool child's group commit (pool/group_commit.py), each
# fenced by its own holder and attempt, in one statement; what comes back was
# ours and is now COMPLETED. Each row is found by its id: the status is compared as
# text so that the planner never joins the ids to a walk of the PROCESSING index
# (see HEARTBEAT).
_COMPLETE_MANY = """
    UPDATE "WorkerJobLive" AS j
    SET status = 'COMPLETED', "completedAt" = statement_timestamp(),
        "lockedAt" = NULL, "lockedBy" = NULL, result = c.result, checkpoint = NULL
    FROM unnest(CAST(:ids AS text[]), CAST(:lockers AS text[]), CAST(:attempts AS int[]),
                CAST(:results AS jsonb[])) AS c(id, locked_by, attempts, result)
    WHERE j.id = c.id AND j.status::text = 'PROCESSING'
      AND j."lockedBy" = c.locked_by AND j.attempts = c.attempts
    RETURNING j.id
    """
COMPLETE_MANY = text(_COMPLETE_MANY)

# The same completions, committed without waiting for the WAL flush: for a
# commit that carries no claim (pool/completer.py). A crash of the server may
# lose the last few hundred milliseconds of such commits; those jobs are then
# still PROCESSING under a lease nobody renews, and run again once it runs
# out: at least once, never twice at once. A claim is never committed this way:
# a claim the server forgot would let a second worker run a job this one runs.
# The setting is local to the statement's own transaction (or the group's).
COMPLETE_MANY_NO_FLUSH = text(
    "WITH no_flush AS (SELECT set_config('synchronous_commit', 'off', true)), done AS ("
    + _COMPLETE_MANY + ") SELECT done.id FROM done, no_flush")

# Which of these jobs an operator's cancel ended while they waited for their
# commit (pool/cancelling.py): a completion that finds them gone is no loss of
# the group's (the other jobs' completions still commit).
CANCELLED_AMONG = text(
    """
    SELECT id FROM "WorkerJob"
    WHERE id = ANY(CAST(:ids AS text[])) AND status = 'FAILED'
      AND "cancelRequestedAt" IS NOT NULL
    """
)

# Jobs claimed ahead that the worker will not start (pool/completer.py: the job
# it ran meanwhile overran): back to the queue, unrun and uncharged, each fenced
# by its holder and attempt.
RELEASE_CLAIMED = text(
    """
    UPDATE "WorkerJobLive" AS j
    SET status = 'PENDING', attempts = j.attempts - 1, "availableAt" = statement_timestamp(),
        "lastError" = :reason, "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL
    FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS int[])) AS c(id, attempts)
    WHERE j.id = c.id AND j.status::text = 'PROCESSING' AND j."lockedBy" = :locked_by
      AND j.attempts = c.attempts
    RETURNING j.id
    """
)

# A group of jobs none of which wrote to the database (pool/child.py
# `commit_alone`): their completions and the claim of the next batch in one
# statement that commits by itself, one round trip instead of four (BEGIN, the
# completions, the claim, COMMIT). One row always comes back: `done_ids` are the
# completions that were still ours; the claimed jobs' columns, when there are
# any, fill that row and the next ones (NULL id: nothing was claimed).
_COMPLETE_AND_CLAIM = ("WITH done AS (" + _COMPLETE_MANY + "), claimed AS ({claim})"
                       + """
    SELECT (SELECT array_agg(id) FROM done) AS done_ids, claimed.*
    FROM (VALUES (1)) AS one (x) LEFT JOIN claimed ON true
    """)


def _complete_and_claim(claim: str, type_filter: str) -> str:
    return _COMPLETE_AND_CLAIM.format(
        claim=claim.format(type_filter=type_filter, returning=_CLAIMED_BY_POOL))


COMPLETE_AND_CLAIM = text(_complete_and_claim(_CLAIM, ""))
COMPLETE_AND_CLAIM_TYPES = text(_complete_and_claim(_CLAIM, _TYPES))
COMPLETE_AND_CLAIM_FROM = text(_complete_and_claim(_CLAIM_FROM, ""))
COMPLETE_AND_CLAIM_TYPES_FROM = text(_complete_and_claim(_CLAIM_FROM, _TYPES))

# :retry is decided by the caller (the handler asked for it); whether attempts
# are left is decided here, on the row as it is now. :checkpoint, the run's latest
# (queue_core/features/checkpoints.py), is written in the same fenced change, so
# that the retry resumes from it; NULL keeps the one the row has.
_KEEP_CHECKPOINT = "checkpoint = COALESCE(CAST(:checkpoint AS jsonb), checkpoint)"
FAIL = text(
    f"""
    UPDATE "WorkerJobLive"
    SET status = CASE WHEN :retry AND attempts < "maxAttempts"
                      THEN 'PENDING' ELSE 'DEAD_LETTER' END::"JobStatus",
        "availableAt" = CASE WHEN :retry AND attempts < "maxAttempts"
                             THEN statement_timestamp() + make_interval(secs => :backoff_s)
                             ELSE "availableAt" END,
        "completedAt" = CASE WHEN :retry AND attempts < "maxAttempts"
                             THEN NULL ELSE statement_timestamp() END,
        "lastError" = :error, "lockedAt" = NULL, "lockedBy" = NULL, {_KEEP_CHECKPOINT}
    WHERE {_FENCE}
    RETURNING status, "availableAt"
    """
)

# A job that never ran to its end because the pool shut down: back in the
# queue at once, and the attempt is given back.
RELEASE = text(
    f"""
    UPDATE "WorkerJobLive"
    SET status = 'PENDING', attempts = attempts - 1, "availableAt" = statement_timestamp(),
        "lastError" = :reason, "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL
    WHERE {_FENCE}
    """
)

# A run cut short by something other than the job (queue_core/accounting.py):
# its first :free interruptions give the attempt back and count one more, with
# a back-off that doubles each time; later ones are charged like FAIL. Its
# :checkpoint as FAIL's: the master writes the last one its child reported.
_FREE = 'COALESCE(interruptions, 0) < :free'
INTERRUPT = text(
    f"""
    UPDATE "WorkerJobLive"
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
        "lockedAt" = NULL, "lockedBy" = NULL, {_KEEP_CHECKPOINT}
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
    UPDATE "WorkerJobLive"
    SET status = 'PENDING', attempts = attempts - 1, "availableAt" = statement_timestamp(),
        "lastError" = :reason, "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL
    WHERE status = 'PROCESSING' AND "lockedBy" = :locked_by
      AND NOT (id = ANY(CAST(:started AS text[])))
    RETURNING id
    """
)

# Each job fenced by its own holder and attempt. A row another session has
# locked (an operator's open transaction, a cascading DELETE, a handler that
# updates its own job) is skipped, not waited for: one locked row must not hold
# up the leases of every other job of the host. Each id comes back with whether
# its lease was renewed and whether it is still held at all (read without a
# lock: a locked row is "held, not renewed", retried at the next beat; only a
# job no longer held by this holder at this attempt is lost).
# The same statement carries what the handlers reported (progress, checkpoints;
# NULL keeps the last value) and answers which of the jobs an operator asked to
# cancel, so that neither costs a statement of its own (queue_core/features/
# cancel.py, job_progress.py, checkpoints.py). A beat with no checkpoint to write
# sends '{}' for them: unnest pads the shorter array with NULLs.
# A job whose `write` is false is only read (held? cancel asked?): its lease is
# fresh enough to be left as it is this time (pool/heartbeats.py).
# Each job is read and locked by its id, never through the PROCESSING index: behind a
# held snapshot that index keeps an entry for every job that ran since, and a beat
# that walked it took 100-700 ms for 200 jobs, past the master's bound
# (docs/benchmarks.md, "A long transaction held open"). The LATERALs' LIMIT keeps the
# planner from turning the lookups into a hash join over that index or the table, and
# the status is compared as text, which the planner cannot match to the index's
# predicate (status = 'PROCESSING'): with it, a LIMIT 1 lookup walked that index,
# row after row, for every job of the beat.
HEARTBEAT = text(
    """
    WITH h AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:lockers AS text[]),
                             CAST(:attempts AS int[]), CAST(:progress AS real[]),
                             CAST(:messages AS text[]), CAST(:write AS boolean[]),
                             CAST(:checkpoints AS jsonb[]))
             AS h(id, locked_by, attempts, progress, message, write, checkpoint)
    ), free AS (
        SELECT j.id FROM h CROSS JOIN LATERAL (
            SELECT j.id FROM "WorkerJobLive" AS j
            WHERE j.id = h.id AND j.status::text = 'PROCESSING'
              AND j."lockedBy" = h.locked_by AND j.attempts = h.attempts
            LIMIT 1 FOR UPDATE SKIP LOCKED) AS j
        WHERE h.write
    ), renewed AS (
        UPDATE "WorkerJobLive" AS j SET "lockedAt" = statement_timestamp(),
            progress = COALESCE(h.progress, j.progress),
            "progressMessage" = COALESCE(h.message, j."progressMessage"),
            checkpoint = COALESCE(h.checkpoint, j.checkpoint)
        FROM h
        WHERE j.id = ANY(ARRAY(SELECT id FROM free)) AND h.id = j.id
        RETURNING j.id
    )
    SELECT h.id, h.write,
           EXISTS (SELECT 1 FROM renewed AS r WHERE r.id = h.id) AS renewed,
           j.id IS NOT NULL AS held,
           COALESCE(j."cancelRequestedAt" IS NOT NULL, false) AS cancel_requested
    FROM h LEFT JOIN LATERAL (
        SELECT j.id, j."cancelRequestedAt" FROM "WorkerJobLive" AS j
        WHERE j.id = h.id AND j.status::text = 'PROCESSING'
          AND j."lockedBy" = h.locked_by AND j.attempts = h.attempts
        LIMIT 1) AS j ON true
    """
)

# Who holds the rows a heartbeat found busy, to name them when a lease must be
# given up for it: the backend whose transaction (or subtransaction) last locked
# or updated the row, read from its xmax. A row share-locked by several sessions
# at once carries a MultiXactId there instead, not a transaction's id: it names
# no one (or, should its number equal a live transaction's, the wrong session:
# this only ever names one in a log line).
ROW_LOCKERS = text(
    """
    SELECT j.id, min(l.pid) AS pid
    FROM "WorkerJobLive" AS j
    JOIN pg_locks AS l ON l.locktype = 'transactionid' AND l.transactionid = j.xmax
                      AND l.mode = 'ExclusiveLock' AND l.granted
    WHERE j.id = ANY(CAST(:ids AS text[]))
    GROUP BY j.id
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
# :since, a master's window (pool/recovery.py): only leases from then on are looked
# at, a range of the PROCESSING index, not a walk from its oldest entry, where behind
# a held snapshot every job run since keeps one; '-infinity' looks at every lease
# (and at a PROCESSING row without one). The test of :since is folded away when the
# statement is planned (psycopg2 sends the value in its text).
_STUCK_FREE = 'COALESCE(j.interruptions, 0) < :free'
STUCK_BEFORE = text("SELECT now() - make_interval(secs => :timeout_s) AS before")
RECOVER_STUCK = text(
    f"""
    WITH stuck AS (
        SELECT id FROM "WorkerJobLive"
        WHERE status = 'PROCESSING'
          AND COALESCE("lockedAt", "startedAt", "createdAt")
              < now() - make_interval(secs => :timeout_s)
          AND (CAST(:since AS timestamptz) = '-infinity'
               OR ("lockedAt" >= CAST(:since AS timestamptz)
                   AND "lockedAt" < now() - make_interval(secs => :timeout_s)))
        ORDER BY "lockedAt"
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    UPDATE "WorkerJobLive" AS j
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
    RETURNING j.id, j.status, j.type, j."lastError"
    """
)

# -- routing: jobs of types no live pool serves (queue_core/features/parking.py) -----------------

# A job of a type that no live master serves waits PENDING for a pool that
# serves it, and it is the oldest of the queue: at the front of the claim's
# index, which every claim that filters by type would walk over. Such jobs are
# *parked*: "heldBack" = true with no concurrency key, which takes them out of
# the claim's index ("heldBack" of a keyed job means waiting for a slot, and
# its triggers count slots; a keyed job is never parked). A master that serves
# the type puts them back. Why and what it costs: alembic/versions/0012_routing.py,
# docs/internals.md "Routing".
_PARKED = """status = 'PENDING' AND "heldBack" AND "concurrencyKey" IS NULL"""

# The live masters' served sets ("WorkerProcess".served; NULL: a master of an
# older skiplock, which claims every type).
_LIVE_MASTERS = """
        SELECT served FROM "WorkerProcess"
        WHERE kind = 'master' AND "heartbeatAt" > now() - make_interval(secs => :live_s)
"""

# Park what no live master serves among the first :window rows of the claim's
# order: that front is what claims walk over. The front is read without a lock
# (locking it would make claims skip the served rows in it), then only the
# unserved rows are locked, skipping any a claim holds. A job is parked only once
# it has been due for :grace_s: a master that just started, or that keeps no
# process table (an embedded pool without its observers), takes its own jobs
# before they are that old. :served is the caller's own set, which its row in
# the process table may not show yet.
PARK_UNSERVED = text(
    f"""
    WITH front AS (
        SELECT id FROM "WorkerJobLive"
        WHERE status = 'PENDING' AND "heldBack" IS NULL
        ORDER BY priority DESC, "availableAt" ASC
        LIMIT :window
    ), live AS ({_LIVE_MASTERS}), unserved AS (
        SELECT j.id FROM "WorkerJobLive" AS j JOIN front ON j.id = front.id
        WHERE j.status = 'PENDING' AND j."heldBack" IS NULL AND j."concurrencyKey" IS NULL
          AND j."availableAt" < now() - make_interval(secs => :grace_s)
          AND j.type <> ALL(CAST(:served AS text[]))
          AND NOT EXISTS (SELECT FROM live
                          WHERE live.served IS NULL OR j.type = ANY(live.served))
        FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE "WorkerJobLive" AS j SET "heldBack" = true
    FROM unserved WHERE j.id = unserved.id
    RETURNING j.type
    """
)

# Put back parked jobs of the types the caller serves: one range of
# "WorkerJob_parked_idx" per type, a probe of an empty index when none is parked.
UNPARK = text(
    f"""
    WITH parked AS (
        SELECT id FROM "WorkerJobLive"
        WHERE type = ANY(CAST(:served AS text[])) AND {_PARKED}
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    UPDATE "WorkerJobLive" AS j SET "heldBack" = NULL
    FROM parked WHERE j.id = parked.id
    RETURNING j.type
    """
)

# Jobs put back wake idle children: sent once they are back, only when some are
# (the probe every heartbeat interval finds none, and wakes nobody).
WAKE_ALONE = text(f"NOTIFY {NOTIFY_CHANNEL}")

PARKED_BY_TYPE = text(
    f"""SELECT type, count(*) AS n FROM "WorkerJobLive" WHERE {_PARKED} GROUP BY type"""
)

LIVE_MASTERS = text(_LIVE_MASTERS)

# -- reading and maintenance -------------------------------------------------------

# payload and result as text, decoded by `Job.from_row`: `skiplock job ID` must
# show a job whose JSON Python cannot decode, not crash on it.
GET_JOB = text(
    f"""
    SELECT id, type, payload::text AS payload_json, status, priority, "availableAt", attempts,
           "maxAttempts", "lastError", "lockedAt", "lockedBy", "idempotencyKey", "userId",
           "createdAt", "startedAt", "completedAt", result::text AS result_json, interruptions,
           checkpoint::text AS checkpoint_json, "traceContext"::text AS trace_context,
           {_features()}
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
    FROM "WorkerJobLive" WHERE status = 'PENDING'
    GROUP BY type
    """
)

PROCESSING_BY_TYPE = text(
    """SELECT type, count(*) AS n FROM "WorkerJobLive" WHERE status = 'PROCESSING' GROUP BY type"""
)

# Small batches, each its own transaction: cleanup never holds many row locks
# on the hot table, and SKIP LOCKED keeps it out of the workers' way. A parent
# stays while one of its dependents has yet to end: the dependent may read its
# result (queue_core/features/dependencies.py).
CLEANUP_BATCH = text(
    """
    WITH doomed AS (
        SELECT id FROM "WorkerJobLive" AS p
        WHERE status = ANY(CAST(:statuses AS "JobStatus"[]))
          AND "completedAt" < now() - make_interval(secs => :older_than_s)
          AND ("hasDependents" IS NOT TRUE OR NOT EXISTS (
                  SELECT FROM "WorkerJobDependency" AS d JOIN "WorkerJobLive" AS c ON c.id = d.child
                  WHERE d.parent = p.id AND c.status IN ('PENDING', 'PROCESSING')))
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM "WorkerJobLive" AS j USING doomed WHERE j.id = doomed.id
    """
)

# A retried job starts over: fresh attempts, interruptions and snoozes, and no
# cancel request. A cancel that came while its last attempt was failing stays on
# the dead letter ("cancelRequestedAt"); kept, it would make the next claim end
# the retried job unrun, FAILED (queue_core/features/cancel.py), so the
# operator's retry became a silent cancel. The retry is the later decision: it
# wins.
# By id, a cancelled job (FAILED) is retried too: naming the job is the
# operator's decision to run it after all, and a dependent cancelled while it
# waited (migration 0016) runs without waiting for its parents again. The bulk
# forms move dead letters only: retrying every dead letter of a type must not
# undo a cancel.
# The checkpoint stays unless :keep_checkpoint is false: a long job retried
# after its bug was fixed resumes where it stopped; one whose checkpoint is what
# breaks it is retried from the start (`skiplock retry --from-start`).
_RETRY = """
    UPDATE "WorkerJob"
    SET status = 'PENDING', attempts = 0, interruptions = NULL, snoozes = NULL,
        "availableAt" = now(), "completedAt" = NULL,
        "lockedAt" = NULL, "lockedBy" = NULL, "startedAt" = NULL,
        "cancelRequestedAt" = NULL, "cancelledBy" = NULL,
        "heldBack" = NULLIF("heldBack", false),
        "waitingFor" = CASE WHEN "waitingFor" IS NOT NULL THEN 0 END,
        checkpoint = CASE WHEN CAST(:keep_checkpoint AS boolean) THEN checkpoint END
    WHERE {filter}
    RETURNING id
"""
RETRY_IDS = text(_RETRY.format(
    filter="status IN ('DEAD_LETTER', 'FAILED') AND id = ANY(CAST(:ids AS text[]))"))
RETRY_DEAD_TYPE = text(_RETRY.format(filter="status = 'DEAD_LETTER' AND type = :type"))
RETRY_DEAD_ALL = text(_RETRY.format(filter="status = 'DEAD_LETTER'"))

# -- cancel (queue_core/features/cancel.py) ------------------------------------------------

_UTC = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""

# A pending job ends here, FAILED, and never starts; a running one keeps running
# with the request recorded, until its master reads it in a heartbeat's answer.
# The first request wins: who asked, and when, stay those of the first cancel.
# `:by` is cast where format() takes it: a driver that binds on the server (psycopg
# 3) sends a string untyped, and format()'s arguments give PostgreSQL no type.
CANCEL_REQUEST = text(
    f"""
    UPDATE "WorkerJobLive" AS j
    SET status = CASE WHEN j.status = 'PENDING' THEN 'FAILED' ELSE j.status END::"JobStatus",
        "completedAt" = CASE WHEN j.status = 'PENDING' THEN now() ELSE j."completedAt" END,
        "lastError" = CASE WHEN j.status = 'PENDING'
                           THEN format('cancelled by %s at %s while pending (%s attempt(s) made)',
                                       CAST(:by AS text), {_UTC.format("now()")}, j.attempts)
                           ELSE j."lastError" END,
        "cancelRequestedAt" = COALESCE(j."cancelRequestedAt", now()),
        "cancelledBy" = COALESCE(j."cancelledBy", :by)
    WHERE j.id = ANY(CAST(:ids AS text[])) AND j.status IN ('PENDING', 'PROCESSING')
    RETURNING j.id, j.status::text AS status
    """
)

STATUS_OF = text(
    """
    SELECT id, status::text AS status, "lastError" AS last_error FROM "WorkerJob"
    WHERE id = ANY(CAST(:ids AS text[]))
    """
)

# What `skiplock cancel --type/--user-id` would touch, in pages (keyset on id).
CANCEL_CANDIDATES = text(
    """
    SELECT id, status::text AS status FROM "WorkerJob"
    WHERE status IN ('PENDING', 'PROCESSING')
      AND (CAST(:type AS text) IS NULL OR type = :type)
      AND (CAST(:user_id AS text) IS NULL OR "userId" = :user_id)
      AND id > :after
    ORDER BY id
    LIMIT :batch
    """
)

# The master ends a running job whose cancel it read, fenced like every change of
# a claimed job: a job that completed meanwhile stays completed.
CANCEL_RUNNING = text(
    f"""
    UPDATE "WorkerJobLive"
    SET status = 'FAILED', "completedAt" = statement_timestamp(),
        "lastError" = format('cancelled by %s at %s %s (worker %s, attempt %s of %s)',
                             COALESCE("cancelledBy", 'unknown'),
                             {_UTC.format('"cancelRequestedAt"')}, CAST(:phase AS text),
                             "lockedBy", attempts, "maxAttempts"),
        "lockedAt" = NULL, "lockedBy" = NULL
    WHERE {_FENCE} AND "cancelRequestedAt" IS NOT NULL
    """
)

# -- waiting on a job (queue_core/features/waiting.py) ------------------------------------------

DONE_CHANNEL = "skiplock_done"

# Someone waits: the job's end will NOTIFY DONE_CHANNEL with its id (a trigger of
# migration 0005; jobs nobody waits on send nothing, see there why).
MARK_WAITED = text(
    """
    UPDATE "WorkerJobLive" SET "notifyDone" = true
    WHERE id = :id AND "notifyDone" IS NOT TRUE AND status IN ('PENDING', 'PROCESSING')
    """
)

# -- snooze (queue_core/features/snooze.py) -----------------------------------------------------

# "Run me again in N seconds": back to PENDING with the attempt given back and the
# snooze counted, or DEAD_LETTER once the type's bound is used up. Fenced like any
# change of a claimed job; its :checkpoint as FAIL's.
_SNOOZE_LEFT = 'COALESCE(snoozes, 0) < :max_snoozes'
SNOOZE = text(
    f"""
    UPDATE "WorkerJobLive"
    SET status = CASE WHEN {_SNOOZE_LEFT} THEN 'PENDING' ELSE 'DEAD_LETTER' END::"JobStatus",
        attempts = CASE WHEN {_SNOOZE_LEFT} THEN attempts - 1 ELSE attempts END,
        snoozes = COALESCE(snoozes, 0) + 1,
        "availableAt" = CASE WHEN {_SNOOZE_LEFT}
                             THEN statement_timestamp() + make_interval(secs => :delay_s)
                             ELSE "availableAt" END,
        "completedAt" = CASE WHEN {_SNOOZE_LEFT} THEN NULL ELSE statement_timestamp() END,
        "lastError" = CASE WHEN {_SNOOZE_LEFT} THEN "lastError"
                           ELSE format('snoozed %s times, the limit of its type', snoozes) END,
        "startedAt" = CASE WHEN {_SNOOZE_LEFT} THEN NULL ELSE "startedAt" END,
        "lockedAt" = NULL, "lockedBy" = NULL, {_KEEP_CHECKPOINT}
    WHERE {_FENCE}
    RETURNING status::text AS status
    """
)

# -- test helpers (skiplock/testing.py) -------------------------------------------------

# Jobs a test looks for: by type, status and a part of the payload (jsonb @>).
FIND_JOBS = text(
    """
    SELECT * FROM "WorkerJob"
    WHERE (CAST(:type AS text) IS NULL OR type = :type)
      AND status = ANY(CAST(:statuses AS "JobStatus"[]))
      AND payload @> CAST(:payload AS jsonb)
    ORDER BY "createdAt", id
    """
)

# `drain(run_scheduled=True)`: delayed jobs and retries waiting for their backoff
# are made due now, so a test need not wait for them.
MAKE_DUE = text(
    """
    UPDATE "WorkerJobLive" SET "availableAt" = now()
    WHERE status = 'PENDING' AND "availableAt" > now()
      AND (CAST(:types AS text[]) IS NULL OR type = ANY(CAST(:types AS text[])))
    """
)

# -- concurrency keys (queue_core/features/limits.py) ------------------------------------------

# Repair slot counts that something bypassed the triggers to change (migration
# 0013_slot_counts): how many keys' counts were wrong.
RECOUNT_SLOTS = text("SELECT skiplock_recount_slots() AS fixed")

# Keys nobody holds or waits for any more, forgotten by cleanup. A key in use again
# meanwhile is kept: the DELETE re-reads `active` on the row it locks, and an
# enqueue that comes after simply creates the row again.
PRUNE_IDLE_KEYS = text(
    """
    DELETE FROM "WorkerConcurrencyKey" AS k
    WHERE k.active = 0 AND k."updatedAt" < now() - make_interval(secs => :idle_s)
      AND NOT EXISTS (SELECT 1 FROM "WorkerJobLive" j
                      WHERE j."concurrencyKey" = k.key AND j.status = 'PENDING' AND j."heldBack")
    """
)

# -- dependencies and batches (queue_core/features/dependencies.py, batches.py) -------

# The jobs a new dependent names that exist already, locked in id order and
# marked as having dependents (the trigger of migration 0016 fires for those
# only), with their status: the lock keeps a parent from ending between this
# read and the commit of the edges, where its trigger would not see them yet.
LOCK_PARENTS = text(
    """
    WITH locked AS (
        SELECT id, status::text AS status, "hasDependents" AS flagged FROM "WorkerJob"
        WHERE id = ANY(CAST(:ids AS text[]))
        ORDER BY id
        FOR NO KEY UPDATE
    ), flag AS (
        UPDATE "WorkerJob" AS j SET "hasDependents" = true
        FROM locked WHERE j.id = locked.id AND locked.flagged IS NOT TRUE
    )
    SELECT id, status FROM locked
    """
)

# INSERT_JOBS with the two columns of a graph: how many parents a job waits for
# (it waits, "heldBack" false, out of the claim's index) and whether a job of the
# same call or batch depends on it. It must set the other columns as INSERT_JOBS
# does, the trace context included.
INSERT_GRAPH_JOBS = text(
    WAKE + """
    INSERT /*skiplock*/ INTO "WorkerJob"
        (id, type, payload, priority, "availableAt", "maxAttempts", "idempotencyKey", "userId",
         "createdAt", "concurrencyKey", "concurrencyLimit", "heldBack", "uniqueKey", "uniqueUntil",
         "traceContext", "waitingFor", "hasDependents", "sequenceKey", "sequencePolicy",
         "fairKey", rate, "rateKey")
    SELECT j.id, j.type, j.payload, j.priority,
           statement_timestamp() + make_interval(secs => j.delay_s), j.max_attempts, j.key,
           j.user_id, statement_timestamp(),
           j.slot_key, j.slot_limit,
           CASE WHEN j.waiting_for > 0 THEN false WHEN j.slot_key IS NOT NULL THEN true END,
           j.unique_key, statement_timestamp() + make_interval(secs => j.unique_s),
           CAST(:trace_context AS jsonb), j.waiting_for, j.has_dependents, j.sequence_key,
           j.sequence_policy, j.fair_key, j.rate, j.rate_key
    FROM unnest(
        CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]),
        CAST(:priorities AS int[]), CAST(:delays AS float8[]), CAST(:max_attempts AS int[]),
        CAST(:keys AS text[]), CAST(:user_ids AS text[]), CAST(:slot_keys AS text[]),
        CAST(:slot_limits AS int[]), CAST(:unique_keys AS text[]), CAST(:unique_secs AS float8[]),
        CAST(:waiting_for AS int[]), CAST(:has_dependents AS boolean[]),
        CAST(:sequence_keys AS text[]), CAST(:sequence_policies AS text[]),
        CAST(:fair_keys AS text[]), CAST(:rates AS text[]), CAST(:rate_keys AS text[])
    ) WITH ORDINALITY AS j(id, type, payload, priority, delay_s, max_attempts, key, user_id,
                           slot_key, slot_limit, unique_key, unique_s, waiting_for,
                           has_dependents, sequence_key, sequence_policy, fair_key, rate,
                           rate_key, ord)
    WHERE j.key IS NULL
       OR NOT EXISTS (SELECT FROM "WorkerJobHistory" AS h WHERE h."idempotencyKey" = j.key)
    ORDER BY j.sequence_key, j.ord
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)

INSERT_EDGES = text(
    """
    INSERT INTO "WorkerJobDependency" (parent, child, policy)
    SELECT * FROM unnest(CAST(:parents AS text[]), CAST(:children AS text[]),
                         CAST(:policies AS text[]))
    ON CONFLICT DO NOTHING
    """
)

# Parents that had already ended when their new dependents were written: their
# end is applied to those dependents alone, as the trigger would have.
RESOLVE_ENDED = text(
    """
    SELECT coalesce(sum(skiplock_resolve_edges(x.parent, x.status, CAST(:children AS text[]))),
                    0) AS readied
    FROM unnest(CAST(:parents AS text[]), CAST(:statuses AS text[])) AS x(parent, status)
    """
)

# A waiting dependent let go by a person (`skiplock retry ID`): it runs without
# waiting for the parents it still waits for.
RELEASE_WAITING = text(
    """
    UPDATE "WorkerJobLive"
    SET "heldBack" = NULL, "waitingFor" = 0,
        "lastError" = format('released by hand at %s while it waited for %s parent(s)',
                             to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                             "waitingFor")
    WHERE id = ANY(CAST(:ids AS text[])) AND status = 'PENDING' AND NOT "heldBack"
    RETURNING id
    """
)

# A job's parents and dependents, with what a dependent reads of a parent.
PARENTS_OF = text(
    """
    SELECT d.parent AS id, d.policy, d."resolvedAt" AS resolved_at, j.type,
           j.status::text AS status, j.result::text AS result_json
    FROM "WorkerJobDependency" AS d LEFT JOIN "WorkerJob" AS j ON j.id = d.parent
    WHERE d.child = :id
    ORDER BY d.parent
    """
)
DEPENDENTS_OF = text(
    """
    SELECT d.child AS id, d.policy, d."resolvedAt" AS resolved_at, j.type,
           j.status::text AS status, NULL AS result_json
    FROM "WorkerJobDependency" AS d LEFT JOIN "WorkerJob" AS j ON j.id = d.child
    WHERE d.parent = :id
    ORDER BY d.child
    LIMIT :limit
    """
)

INSERT_BATCH = text(
    """
    INSERT INTO "WorkerBatch" (id, "idempotencyKey", "callbackId", "onComplete", "onFailure",
                               total)
    VALUES (:id, :key, :callback_id, CAST(:on_complete AS jsonb), CAST(:on_failure AS jsonb),
            :total)
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)
BATCH_BY_KEY = text('SELECT id, "callbackId" AS callback_id FROM "WorkerBatch" '
                    'WHERE "idempotencyKey" = :key')
BATCH_READY = text("SELECT skiplock_batch_ready(:callback_id) AS ended")
BATCH_CALLBACK = text('SELECT "callbackId" AS callback_id FROM "WorkerBatch" WHERE id = :id')

# A batch and its members' ends, counted now (the counts stored on the batch are
# those its callback got).
BATCH_STATUS = text(
    """
    SELECT b.id, b."callbackId" AS callback_id, b.total, b."createdAt" AS created_at,
           b."endedAt" AS ended_at, b.counts, cb.status::text AS callback_status,
           cb.type AS callback_type,
           m.completed, m.dead_lettered, m.cancelled, m.pending, m.processing
    FROM "WorkerBatch" AS b
    LEFT JOIN "WorkerJob" AS cb ON cb.id = b."callbackId"
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE j.status = 'COMPLETED') AS completed,
               count(*) FILTER (WHERE j.status = 'DEAD_LETTER') AS dead_lettered,
               count(*) FILTER (WHERE j.status = 'FAILED') AS cancelled,
               count(*) FILTER (WHERE j.status = 'PENDING') AS pending,
               count(*) FILTER (WHERE j.status = 'PROCESSING') AS processing
        FROM "WorkerJobDependency" AS d JOIN "WorkerJob" AS j ON j.id = d.parent
        WHERE d.child = b."callbackId") AS m
    WHERE b.id = :id
    """
)
BATCH_OF_JOB = text(
    """
    SELECT b.id FROM "WorkerBatch" AS b
    WHERE b."callbackId" = :id
       OR b."callbackId" IN (SELECT child FROM "WorkerJobDependency" WHERE parent = :id)
    LIMIT 1
    """
)
BATCH_MEMBERS = text(
    """
    SELECT j.id, j.type, j.status::text AS status, j.attempts, j."completedAt" AS completed_at,
           j."lastError" AS last_error
    FROM "WorkerBatch" AS b
    JOIN "WorkerJobDependency" AS d ON d.child = b."callbackId"
    JOIN "WorkerJob" AS j ON j.id = d.parent
    WHERE b.id = :id
    ORDER BY j.id
    LIMIT :limit
    """
)

# -- debounce (queue_core/features/debounce.py, migration 0020_debounce) --------------

# One job per type and debounce key while it is PENDING: the partial unique index
# "WorkerJob_debounce_key" arbitrates, as "idempotencyKey" does for INSERT_JOBS,
# but a conflict moves the pending job instead of leaving it: its run time
# becomes this enqueue's (now + the debounce), and in the `replace` variant its
# payload too. A row that a claim holds makes the statement wait for the claim's
# commit; the claimed row has left the partial index then, and the row is
# inserted new. RETURNING says which rows were new
# (xmax is 0 for a row this statement inserted, the locker's xid for one it updated).
# The rows of one statement have distinct keys (ON CONFLICT DO UPDATE cannot touch
# a row twice): `debounce.rounds` splits a call that repeats a key.
_DEBOUNCED_CONFLICT = """
    ON CONFLICT (type, "debounceKey") WHERE status = 'PENDING' AND "debounceKey" IS NOT NULL
    DO UPDATE SET "availableAt" = EXCLUDED."availableAt", {payload}
        "debounceMoves" = COALESCE(w."debounceMoves", 0) + 1
    RETURNING id, type, "debounceKey" AS key, (xmax = 0) AS created
"""
_INSERT_DEBOUNCED = WAKE + """
    INSERT /*skiplock*/ INTO "WorkerJobLive" AS w
        (id, type, payload, priority, "availableAt", "maxAttempts", "userId", "createdAt",
         "concurrencyKey", "concurrencyLimit", "heldBack", "traceContext", "debounceKey")
    SELECT j.id, j.type, j.payload, j.priority,
           statement_timestamp() + make_interval(secs => j.delay_s), j.max_attempts,
           j.user_id, statement_timestamp(),
           j.slot_key, j.slot_limit, CASE WHEN j.slot_key IS NOT NULL THEN true END,
           CAST(:trace_context AS jsonb), j.debounce_key
    FROM unnest(
        CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]),
        CAST(:priorities AS int[]), CAST(:delays AS float8[]), CAST(:max_attempts AS int[]),
        CAST(:user_ids AS text[]), CAST(:slot_keys AS text[]), CAST(:slot_limits AS int[]),
        CAST(:debounce_keys AS text[])
    ) WITH ORDINALITY AS j(id, type, payload, priority, delay_s, max_attempts, user_id,
                           slot_key, slot_limit, debounce_key, ord)
    ORDER BY j.ord
""" + _DEBOUNCED_CONFLICT
# One job alone, what `enqueue()` writes: plain VALUES, prepared once on
# skiplock's own connection (as INSERT_UNKEYED_JOB_POSITIONAL; the parameters of
# INSERT_UNKEYED_JOB_PARAMS, then the key). Same columns, set the same way.
INSERT_DEBOUNCED_JOB_POSITIONAL = """
    INSERT /*skiplock*/ INTO "WorkerJobLive" AS w
        (id, type, payload, priority, "availableAt", "maxAttempts", "userId", "createdAt",
         "concurrencyKey", "concurrencyLimit", "heldBack", "traceContext", "debounceKey")
    VALUES (CAST($1 AS text), CAST($2 AS text), CAST($3 AS jsonb), CAST($4 AS int),
            statement_timestamp() + make_interval(secs => CAST($5 AS float8)),
            CAST($6 AS int), CAST($7 AS text), statement_timestamp(), CAST($8 AS text),
            CAST($9 AS int), CASE WHEN CAST($8 AS text) IS NOT NULL THEN true END,
            CAST($10 AS jsonb), CAST($11 AS text))
""" + _DEBOUNCED_CONFLICT
INSERT_DEBOUNCED = text(_INSERT_DEBOUNCED.format(payload=""))
INSERT_DEBOUNCED_REPLACE = text(_INSERT_DEBOUNCED.format(payload="payload = EXCLUDED.payload,"))

# `skiplock stats`: the pending jobs that have a debounce key (read from the
# partial unique index), how many of them are not due yet, and how often
# enqueues moved them.
DEBOUNCED_BY_TYPE = text(
    """
    SELECT type, count(*) AS pending,
           count(*) FILTER (WHERE "availableAt" > now()) AS not_due,
           COALESCE(sum("debounceMoves"), 0) AS moves
    FROM "WorkerJobLive"
    WHERE status = 'PENDING' AND "debounceKey" IS NOT NULL
    GROUP BY type
    """
)

# -- priority aging (queue_core/features/aging.py) --------------------------------------

# One pass of aging: the claimable jobs that have waited :after_s since they came
# due (or since their last raise) get :step more priority, up to the bound: :max,
# or without one the highest priority among claimable jobs now (one probe of the
# claim's index). Found through the claim's own index, without a new one: a
# loose scan walks the distinct priorities below the bound (one probe each), and
# within each priority the index is in "availableAt" order, so the oldest due
# rows are its first entries. Rows raised less than :after_s ago are the only
# ones walked over for nothing, at most a few batches of them. The oldest :batch
# of all are raised, found again by id (an array: joined, the planner read every
# due row of the claim's index to hash them), skipping rows a claim holds; the lock's re-check of the
# row keeps two masters' passes from raising a row twice. "agedFrom" keeps the
# priority a job was enqueued with. The claim's order is untouched: a raised
# job simply sits higher in the same index.
_AGED_WAIT = """j."availableAt" <= now() - make_interval(secs => :after_s)
              AND (j."agedAt" IS NULL OR j."agedAt" <= now() - make_interval(secs => :after_s))"""
AGE_JOBS = text(
    f"""
    WITH RECURSIVE bound(top) AS (
        SELECT COALESCE(CAST(:max AS int), (
            SELECT priority FROM "WorkerJobLive"
            WHERE status = 'PENDING' AND "heldBack" IS NULL
            ORDER BY priority DESC, "availableAt" ASC LIMIT 1))
    ), levels(priority) AS (
        (SELECT priority FROM "WorkerJobLive"
         WHERE status = 'PENDING' AND "heldBack" IS NULL AND priority < (SELECT top FROM bound)
         ORDER BY priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT j.priority FROM "WorkerJobLive" j
                WHERE j.status = 'PENDING' AND j."heldBack" IS NULL
                  AND j.priority < l.priority
                ORDER BY j.priority DESC LIMIT 1)
        FROM levels l WHERE l.priority IS NOT NULL
    ), waited AS (
        SELECT c.id, c."availableAt"
        FROM levels l, LATERAL (
            SELECT j.id, j."availableAt" FROM "WorkerJobLive" j
            WHERE j.status = 'PENDING' AND j."heldBack" IS NULL AND j.priority = l.priority
              AND {_AGED_WAIT}
            ORDER BY j."availableAt" LIMIT :batch) c
        WHERE l.priority IS NOT NULL
        ORDER BY c."availableAt" LIMIT :batch
    ), locked AS (
        SELECT j.id FROM "WorkerJobLive" j
        WHERE j.id = ANY(ARRAY(SELECT id FROM waited))
          AND j.status = 'PENDING' AND j."heldBack" IS NULL
          AND j.priority < (SELECT top FROM bound) AND {_AGED_WAIT}
        FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE "WorkerJobLive" AS j
    SET priority = LEAST(j.priority + :step, (SELECT top FROM bound)),
        "agedFrom" = COALESCE(j."agedFrom", j.priority), "agedAt" = now()
    FROM locked
    WHERE j.id = locked.id
    RETURNING j.id, j.type
    """
)

# `skiplock stats`: pending jobs that aging raised, by type (their own partial index).
AGED_BY_TYPE = text(
    """
    SELECT type, count(*) AS n, COALESCE(max(priority - "agedFrom"), 0) AS most_raised
    FROM "WorkerJobLive"
    WHERE status = 'PENDING' AND "agedFrom" IS NOT NULL
    GROUP BY type
    """
)

# A dependent that named one parent twice (by position and by id) waits for it once
# (relative: a job of a sequence also waits for its turn, migration 0019).
SET_WAITING_FOR = text('UPDATE "WorkerJobLive" SET "waitingFor" = "waitingFor" - :less '
                       'WHERE id = :id')

# -- sequences (queue_core/features/sequences.py) -------------------------------------

# A job in key {k}'s line (alias {a}): from its enqueue until it ends, PENDING,
# PROCESSING, or dead-lettered under the policy hold; the key's head is its job in
# line with the lowest number (migration 0019_sequences, whose index
# "WorkerJob_sequence_idx" holds these rows).
SEQUENCE_LINE = """{a}"sequenceKey" = {k} AND {a}"sequenceNo" IS NOT NULL
    AND ({a}status IN ('PENDING', 'PROCESSING')
         OR ({a}status = 'DEAD_LETTER' AND {a}"sequencePolicy" IS DISTINCT FROM 'pass'))"""
# Job {j} is its key's head.
_SEQUENCE_HEAD = ("""NOT EXISTS (SELECT FROM "WorkerJobLive" AS e WHERE """
                  + SEQUENCE_LINE.format(a="e.", k='{j}."sequenceKey"')
                  + """ AND e."sequenceNo" < {j}."sequenceNo")""")
# Heads held: dead-lettered under the policy hold, first in their line.
_HELD_HEADS = ("""SELECT h."sequenceKey" AS key, h.id, h.status::text AS status
    FROM "WorkerJobLive" AS h
    WHERE h.status = 'DEAD_LETTER' AND """ + SEQUENCE_LINE.format(a="h.", k='h."sequenceKey"')
               + " AND " + _SEQUENCE_HEAD.format(j="h"))

# Keys held by a dead-lettered head (policy hold), with how many jobs wait behind it.
HELD_SEQUENCES = text(
    """
    SELECT h.key, h.id AS head, h.status AS head_status,
           (SELECT count(*) FROM "WorkerJobLive" AS w
            WHERE w."sequenceKey" = h.key AND w.status = 'PENDING') AS waiting
    FROM (""" + _HELD_HEADS + """) AS h
    ORDER BY waiting DESC, h.key
    LIMIT :limit
    """
)

# How many keys have jobs in line, how many of them are held, how many jobs wait
# for their turn (each key's head excluded: it may run).
SEQUENCE_COUNTS = text(
    """
    SELECT (SELECT count(DISTINCT "sequenceKey") FROM "WorkerJobLive" AS l
            WHERE """ + SEQUENCE_LINE.format(a="l.", k='l."sequenceKey"') + """) AS keys,
           (SELECT count(*) FROM (""" + _HELD_HEADS + """) AS h) AS held,
           (SELECT count(*) FROM "WorkerJobLive"
            WHERE status = 'PENDING' AND "sequenceKey" IS NOT NULL
              AND "heldBack" = false AND "waitingFor" > 0) AS waiting
    """
)

# Keys with no job in line, untouched for :idle_s seconds (cleanup): their numbers
# start again at 1. An enqueue racing with the delete inserts the key again.
PRUNE_IDLE_SEQUENCES = text(
    """
    DELETE FROM "WorkerSequence" AS s
    WHERE "updatedAt" < now() - make_interval(secs => :idle_s)
      AND NOT EXISTS (SELECT FROM "WorkerJobLive" AS l
                      WHERE """ + SEQUENCE_LINE.format(a="l.", k="s.key") + """)
    """
)

# A person lets a held key go on: its dead letter takes the policy pass and leaves
# the line, and the next job becomes the head. No row: the key is not held.
RELEASE_SEQUENCE = text(
    """
    SELECT skiplock_sequence_advance(h.key) AS head
    FROM (""" + _HELD_HEADS + """ AND h."sequenceKey" = :key) AS h
    """
)


# -- fairness between keys (queue_core/features/fairness.py) --------------------------

# A key's weight; its window changes with it, and a larger one is filled at once
# (FILL_TURNS after it).
SET_WEIGHT = text(
    """
    INSERT INTO "WorkerFairKey" AS f (key, weight) VALUES (:key, :weight)
    ON CONFLICT (key) DO UPDATE SET weight = EXCLUDED.weight, "updatedAt" = now()
    """
)
FORGET_WEIGHT = text('DELETE FROM "WorkerFairKey" WHERE key = :key')

# Let in the jobs of one key (:key), or of every key that has some waiting (NULL),
# as far as its window has room (migration 0021_fairness).
FILL_TURNS = text("SELECT skiplock_fair_fill(CAST(:key AS text)) AS let_in")

# A job waits its turn: PENDING, out of the claim's index by fairness alone.
WAITING_TURN = """(status = 'PENDING' AND "fairKey" IS NOT NULL AND "heldBack" = false
                   AND ("waitingFor" IS NULL OR "waitingFor" = 0))"""

# How many jobs wait their turn, through "WorkerJob_fair_idx".
COUNT_WAITING_TURN = text(f'SELECT count(*) FROM "WorkerJobLive" WHERE {WAITING_TURN}')

# What `skiplock stats` shows of each fair key: its weight and window, its jobs in the
# claim's index and those waiting their turn; keys with pending jobs or a weight.
FAIR_KEYS = text(
    f"""
    WITH jobs AS (
        SELECT "fairKey" AS key,
               count(*) FILTER (WHERE "heldBack" IS NULL) AS admitted,
               count(*) FILTER (WHERE {WAITING_TURN}) AS waiting
        FROM "WorkerJobLive"
        WHERE status = 'PENDING' AND "fairKey" IS NOT NULL
          AND (CAST(:key AS text) IS NULL OR "fairKey" = CAST(:key AS text))
        GROUP BY 1
    ), weights AS (
        SELECT key, weight FROM "WorkerFairKey"
        WHERE CAST(:key AS text) IS NULL OR key = CAST(:key AS text)
    ), base AS (
        SELECT CASE WHEN current_setting('skiplock.fair_window', true) ~ '^ *[0-9]{{1,5}} *$'
                    THEN greatest(trim(current_setting('skiplock.fair_window', true))::int, 1)
                    ELSE 10 END AS n
    )
    SELECT COALESCE(j.key, f.key) AS key, COALESCE(f.weight, 1) AS weight,
           COALESCE(f.weight, 1) * base.n AS window,
           COALESCE(j.admitted, 0) AS admitted, COALESCE(j.waiting, 0) AS waiting
    FROM jobs AS j FULL JOIN weights AS f ON f.key = j.key CROSS JOIN base
    ORDER BY COALESCE(j.waiting, 0) DESC, 1
    LIMIT :limit
    """
)
# -- per-type policies (queue_core/features/type_policies.py, migration 0017_policies)

_POLICY_COLUMNS = ('"concurrencyLimit", "concurrencyKeyField", "maxAttempts", backoff, '
                   '"uniqueFor", rate, "rateKeyField"')

# A master's boot: its handlers' options, one row per served type that has some,
# and the boot rows of served types that have none any more go. One statement, the
# rows in type order (hosts booting at once lock them in one order: no deadlock);
# a row whose values are already these is not written (no churn, no lock held
# longer than the probe); an operator's row is never touched.
WRITE_BOOT_POLICIES = text(
    f"""
    WITH wanted AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(
            type text, "concurrencyLimit" int, "concurrencyKeyField" text,
            "maxAttempts" int, backoff jsonb, "uniqueFor" text, rate text,
            "rateKeyField" text)
    ), gone AS (
        DELETE FROM "WorkerTypePolicy" AS p
        WHERE p.source = 'boot' AND p.type = ANY(CAST(:served AS text[]))
          AND NOT EXISTS (SELECT FROM wanted WHERE wanted.type = p.type)
    )
    INSERT INTO "WorkerTypePolicy" AS p (type, {_POLICY_COLUMNS}, source, "updatedBy")
    SELECT type, {_POLICY_COLUMNS}, 'boot', :by FROM wanted ORDER BY type
    ON CONFLICT (type) DO UPDATE
    SET ("concurrencyLimit", "concurrencyKeyField", "maxAttempts", backoff, "uniqueFor",
         rate, "rateKeyField", "updatedAt", "updatedBy")
        = (EXCLUDED."concurrencyLimit", EXCLUDED."concurrencyKeyField",
           EXCLUDED."maxAttempts", EXCLUDED.backoff, EXCLUDED."uniqueFor", EXCLUDED.rate,
           EXCLUDED."rateKeyField", now(), EXCLUDED."updatedBy")
    WHERE p.source = 'boot'
      AND (p."concurrencyLimit", p."concurrencyKeyField", p."maxAttempts", p.backoff,
           p."uniqueFor", p.rate, p."rateKeyField")
          IS DISTINCT FROM
          (EXCLUDED."concurrencyLimit", EXCLUDED."concurrencyKeyField",
           EXCLUDED."maxAttempts", EXCLUDED.backoff, EXCLUDED."uniqueFor", EXCLUDED.rate,
           EXCLUDED."rateKeyField")
    """
)

TYPE_POLICIES = text(
    f"""
    SELECT type, {_POLICY_COLUMNS}, source, "updatedAt" AS updated_at,
           "updatedBy" AS updated_by
    FROM "WorkerTypePolicy"
    WHERE CAST(:type AS text) IS NULL OR type = :type
    ORDER BY type
    """
)

ALL_POLICIES = text(f'SELECT type, {_POLICY_COLUMNS}, source FROM "WorkerTypePolicy"')

# An operator's values: the given ones replace, the others stay as they are.
SET_TYPE_POLICY = text(
    f"""
    INSERT INTO "WorkerTypePolicy" AS p (type, {_POLICY_COLUMNS}, source, "updatedBy")
    SELECT CAST(:type AS text), t.*, 'operator', CAST(:by AS text)
    FROM jsonb_to_record(CAST(:values AS jsonb)) AS t(
        "concurrencyLimit" int, "concurrencyKeyField" text, "maxAttempts" int,
        backoff jsonb, "uniqueFor" text, rate text, "rateKeyField" text)
    ON CONFLICT (type) DO UPDATE
    SET ("concurrencyLimit", "concurrencyKeyField", "maxAttempts", backoff, "uniqueFor",
         rate, "rateKeyField", source, "updatedAt", "updatedBy")
        = (CASE WHEN CAST(:values AS jsonb) ? 'concurrencyLimit'
                THEN EXCLUDED."concurrencyLimit" ELSE p."concurrencyLimit" END,
           CASE WHEN CAST(:values AS jsonb) ? 'concurrencyKeyField'
                THEN EXCLUDED."concurrencyKeyField" ELSE p."concurrencyKeyField" END,
           CASE WHEN CAST(:values AS jsonb) ? 'maxAttempts'
                THEN EXCLUDED."maxAttempts" ELSE p."maxAttempts" END,
           CASE WHEN CAST(:values AS jsonb) ? 'backoff' THEN EXCLUDED.backoff ELSE p.backoff END,
           CASE WHEN CAST(:values AS jsonb) ? 'uniqueFor'
                THEN EXCLUDED."uniqueFor" ELSE p."uniqueFor" END,
           CASE WHEN CAST(:values AS jsonb) ? 'rate' THEN EXCLUDED.rate ELSE p.rate END,
           CASE WHEN CAST(:values AS jsonb) ? 'rateKeyField'
                THEN EXCLUDED."rateKeyField" ELSE p."rateKeyField" END,
           'operator', now(), EXCLUDED."updatedBy")
    RETURNING type
    """
)

RESET_TYPE_POLICY = text('DELETE FROM "WorkerTypePolicy" WHERE type = :type RETURNING source')


# -- why a pending job is not claimable (queue_core/features/why.py) --------------------
# One Reason per cause; a feature that holds jobs for a new reason adds one line here.


@dataclass(frozen=True)
class Reason:
    name: str       # camelCase, as `skiplock stats --json` names it
    label: str      # what `skiplock stats` prints before the count
    predicate: str  # SQL over the pending job "j": it waits for this reason
    sentence: str   # SQL text expression over "j": the reason in words


# "heldBack": NULL = claimable when due; true with a key = waiting for a slot;
# true without one = parked; false = a dependent waiting for its parents ("waitingFor"
# > 0), or a fair job waiting its key's turn or a rate-limited one waiting for its
# window (0 or NULL; migrations 0021_fairness, 0018_rates).
# A job of a sequence that is not its key's head waits for its turn: one more in
# "waitingFor" than its parents (migration 0019_sequences).
_TURN = ("""(j."sequenceKey" IS NOT NULL AND j."heldBack" = false AND j.status = 'PENDING'
            AND NOT """ + _SEQUENCE_HEAD.format(j="j") + ")")
_PARENTS_LEFT = f"""(j."waitingFor" - CASE WHEN {_TURN} THEN 1 ELSE 0 END)"""
_WHEN = """to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""

HELD_REASONS: tuple[Reason, ...] = (
    Reason("slot", "waiting for a concurrency slot",
           """j."heldBack" AND j."concurrencyKey" IS NOT NULL""",
           """(SELECT format('waiting for a slot of key %s (%s of %s taken)', j."concurrencyKey",
                             COALESCE(k.active, 0), COALESCE(k."limit", j."concurrencyLimit"))
               FROM (SELECT 1) AS one
               LEFT JOIN "WorkerConcurrencyKey" AS k ON k.key = j."concurrencyKey")"""),
    Reason("parked", "parked (no live pool serves the type)",
           """j."heldBack" AND j."concurrencyKey" IS NULL""",
           """format('parked: no live pool serves its type %s (it runs once one does)',
                     j.type)"""),
    Reason("parents", "waiting for parents",
           f"""j."heldBack" = false AND {_PARENTS_LEFT} > 0""",
           f"""format('waiting for %s parent job%s to end (skiplock job ID lists them)',
                      {_PARENTS_LEFT}, CASE WHEN {_PARENTS_LEFT} = 1 THEN '' ELSE 's' END)"""),
    Reason("sequence", "waiting for their turn in a sequence", _TURN,
           """(SELECT format('waiting for its turn in sequence %s (number %s)%s', j."sequenceKey",
                             j."sequenceNo",
                             CASE WHEN h.status = 'DEAD_LETTER'
                                  THEN format(': the key is held by its dead-lettered job %s '
                                              '(retry or cancel it)', h.id) ELSE '' END)
               FROM (SELECT 1) AS one
               LEFT JOIN LATERAL (SELECT h.id, h.status FROM "WorkerJobLive" AS h
                                  WHERE """ + SEQUENCE_LINE.format(a="h.", k='j."sequenceKey"')
           + """ ORDER BY h."sequenceNo" LIMIT 1) AS h ON true)"""),
    Reason("fairTurn", "waiting their fair key's turn",
           """j."fairKey" IS NOT NULL AND j."heldBack" = false
              AND COALESCE(j."waitingFor", 0) = 0""",
           """format('waiting its turn behind the other jobs of fair key %s: at most weight x '
                     'window of a key''s jobs are in the queue at once, and each one claimed '
                     'lets the next one in', j."fairKey")"""),
    Reason("rateWindow", "waiting for a rate window",
           """j."rateKey" IS NOT NULL AND j."heldBack" = false
              AND COALESCE(j."waitingFor", 0) = 0 AND j."fairKey" IS NULL""",
           """(SELECT format('waiting for a window of its rate key %s (%s); it is let in when '
                             'a token of that key is free', j."rateKey",
                             COALESCE(k.count || ' starts every ' || k."periodS" || ' s', j.rate))
               FROM (SELECT 1) AS one
               LEFT JOIN "WorkerRateKey" AS k ON k.key = j."rateKey")"""),
    Reason("debounced", "debounced",
           """j."debounceKey" IS NOT NULL AND j."availableAt" > statement_timestamp()""",
           f"""format('not due until %s: debounced by key %s (each enqueue of the key moves '
                      'it to that enqueue plus its debounce%s)', {_WHEN.format(at='j."availableAt"')},
                      j."debounceKey",
                      CASE WHEN COALESCE(j."debounceMoves", 0) > 0
                           THEN format('; moved by %s later enqueue%s', j."debounceMoves",
                                       CASE WHEN j."debounceMoves" = 1 THEN '' ELSE 's' END)
                           ELSE '' END)"""),
    Reason("rateNotDue", "let in by a rate key, not due yet",
           """j."rateKey" IS NOT NULL AND j."heldBack" IS NULL
              AND j."availableAt" > statement_timestamp()""",
           f"""format('let in by its rate key %s; it may start at %s, when its token is free',
                      j."rateKey", {_WHEN.format(at='j."availableAt"')})"""),
    Reason("notDue", "not due yet",
           """j."availableAt" > statement_timestamp() AND j."debounceKey" IS NULL
              AND (j."rateKey" IS NULL OR j."heldBack" IS NOT NULL)""",
           f"""format('not due until %s', {_WHEN.format(at='j."availableAt"')})"""),
    Reason("paused", "paused type",
           """j.type IN (SELECT type FROM "WorkerJobPause")""",
           """format('its type %s is paused (skiplock resume %s)', j.type, j.type)"""),
)


def _explain_statement() -> str:
    cases = ",\n".join(f"CASE WHEN {r.predicate} THEN {r.sentence} END" for r in HELD_REASONS)
    return (f'SELECT ARRAY[{cases}] AS reasons FROM "WorkerJobLive" AS j '
            "WHERE j.id = :id AND j.status = 'PENDING'")


def _count_statement() -> str:
    counts = ",\n".join(f'count(*) FILTER (WHERE {r.predicate}) AS "{r.name}"'
                        for r in HELD_REASONS)
    # Only the pending rows that are not plainly claimable are read: those out of the
    # claim's index, those not due, and a paused type's.
    return (f'SELECT {counts} FROM "WorkerJobLive" AS j '
            """WHERE j.status = 'PENDING' AND (j."heldBack" IS NOT NULL
                   OR j."availableAt" > statement_timestamp()
                   OR j.type IN (SELECT type FROM "WorkerJobPause"))""")


WHY_PENDING = text(_explain_statement())
COUNT_HELD_BY_REASON = text(_count_statement())

# -- rate limits per window (queue_core/features/rates.py, migration 0018_rates) -----------

# A job waiting for its window: PENDING, held back (false) and waiting for no parent.
RATE_WAITING_PREDICATE = """status = 'PENDING' AND "rateKey" IS NOT NULL AND NOT "heldBack"
      AND COALESCE("waitingFor", 0) = 0"""

RATE_WAITING = text(f'SELECT count(*) FROM "WorkerJobLive" WHERE {RATE_WAITING_PREDICATE}')

# The keys with jobs waiting for their window, most first: how many, how many are
# let in (a token each), and when the first of those may start.
RATE_KEYS = text(
    f"""
    WITH waiting AS (
        SELECT "rateKey" AS key, count(*) AS n FROM "WorkerJobLive"
        WHERE {RATE_WAITING_PREDICATE}
        GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT :limit
    )
    SELECT w.key, k.count || '/' || k."periodS" || 's' AS rate, w.n AS waiting,
           l.n AS let_in, l.next_at
    FROM waiting AS w JOIN "WorkerRateKey" AS k ON k.key = w.key
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, min(a) AS next_at FROM (
            SELECT j."availableAt" AS a FROM "WorkerJobLive" AS j
            WHERE j."rateKey" = w.key AND j.status = 'PENDING'
              AND COALESCE(j."waitingFor", 0) = 0 AND j."heldBack" IS NULL
            UNION ALL  -- two ranges of the index: an OR would read the key's backlog
            SELECT j."availableAt" FROM "WorkerJobLive" AS j
            WHERE j."rateKey" = w.key AND j.status = 'PENDING'
              AND COALESCE(j."waitingFor", 0) = 0 AND j."heldBack") AS let) AS l
    ORDER BY w.n DESC, w.key
    """
)

RATE_WAKE = text("SELECT skiplock_rate_wake()")

# Keys idle for :idle_s (and a period): no job waits or is let in, no token is free
# later than now, none is written down. Their next job makes the key again, with
# every token free, which is what the window allows by then.
PRUNE_IDLE_RATE_KEYS = text(
    """
    DELETE FROM "WorkerRateKey" AS k
    WHERE k."updatedAt" < now() - make_interval(secs => greatest(:idle_s, k."periodS"))
      AND (cardinality(k."freeAt") = 0 OR k."freeAt"[cardinality(k."freeAt")] <= now())
      AND NOT EXISTS (SELECT FROM "WorkerRateToken" AS t WHERE t.key = k.key)
      AND NOT EXISTS (SELECT FROM "WorkerJobLive" AS j
                      WHERE j."rateKey" = k.key AND j.status = 'PENDING'
                        AND COALESCE(j."waitingFor", 0) = 0)
    """
)

# -- history (queue_core/features/history.py, migration 0022_history) -------------------

# The settings, in seconds: how long a finished job stays live (`skiplock.history_after`,
# 60 s: wait(), results and the dashboard's recent jobs read the live part), a dead
# letter (`skiplock.history_dead_after`, 7 days: a person sees and retries it there),
# and a partition's width (`skiplock.history_width`, 1 day).
HISTORY_SETTINGS = text(
    """
    SELECT extract(epoch FROM skiplock_interval_setting('skiplock.history_after',
                                                        interval '60 seconds')) AS after_s,
           extract(epoch FROM skiplock_interval_setting('skiplock.history_dead_after',
                                                        interval '7 days')) AS dead_after_s,
           extract(epoch FROM skiplock_history_width()) AS width_s
    """
)

# The partitions for now and the :ahead next widths (the mover needs now's before it
# moves a row); the names of those it made.
HISTORY_ENSURE = text(
    """
    SELECT made FROM generate_series(0, :ahead) AS k,
         LATERAL skiplock_history_partition(now() + k * skiplock_history_width()) AS made
    WHERE made IS NOT NULL
    """
)

HISTORY_PARTITIONS = text(
    """
    SELECT p.name, p.lower, p.upper, i.inhdetachpending AS detaching
    FROM skiplock_history_partitions() AS p
    JOIN pg_inherits AS i ON i.inhrelid = to_regclass(format('%I', p.name))
    ORDER BY p.lower
    """
)
# The oldest transaction that holds a lock on a partition being detached, or on its
# parents: what the detach waits for (history._detach names it).
HISTORY_DETACH_WAITS_FOR = text(
    """
    SELECT a.pid, a.state, EXTRACT(EPOCH FROM now() - a.xact_start) AS age_s
    FROM pg_stat_activity AS a
    WHERE a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
      AND EXISTS (SELECT FROM pg_locks AS l
                  WHERE l.pid = a.pid AND l.relation IN (to_regclass(format('%I', :name)),
                        '"WorkerJobHistory"'::regclass, '"WorkerJob"'::regclass))
    ORDER BY a.xact_start
    LIMIT 1
    """
)
# A detach that a crash left half done (DETACH ... CONCURRENTLY is two transactions).
HISTORY_DETACHING = text(
    """
    SELECT c.relname AS name FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = '"WorkerJobHistory"'::regclass AND i.inhdetachpending
    """
)

# One batch of finished jobs to history: of :status, finished :older_than_s ago, the
# earliest first (the finished index's order, for one status).
# The row moves to the partition for now() (an UPDATE of the partition key on the
# root: a DELETE from the live part, whose DELETE triggers fire as for cleanup's
# DELETE, and an INSERT into history). One mover at a time (the advisory lock: a
# second finds nothing to do), never waiting on a row (SKIP LOCKED). Left live:
# a dead letter that holds its sequence's line (policy hold: archiving it would let
# the next job in), a job whose scoped key's window is not over (the window is
# enforced by the live part's unique index), a parent one of whose dependents has
# yet to end (it may read its result; as cleanup). :from_at, a master's cursor
# (history.MoveCursor), starts the walk of the finished index at the last row it
# moved, not at the index's head ('-infinity'), where the entries of every row moved
# since a held snapshot began stay until vacuum may remove them. What came back:
# how many moved, and the latest "completedAt" among them (the cursor's next start).
HISTORY_LOCK = 0x736B6970686D6F76  # "skiphmov"
HISTORY_MOVE = text(
    f"""
    WITH gate AS (SELECT pg_try_advisory_xact_lock({HISTORY_LOCK}) AS ok), moving AS (
        SELECT p.id FROM "WorkerJobLive" AS p
        WHERE (SELECT ok FROM gate)
          AND p.status = CAST(:status AS "JobStatus")
          AND p."completedAt" >= CAST(:from_at AS timestamptz)
          AND p."completedAt" < now() - make_interval(secs => :older_than_s)
          AND NOT (p.status = 'DEAD_LETTER' AND p."sequenceKey" IS NOT NULL
                   AND p."sequenceNo" IS NOT NULL AND p."sequencePolicy" IS DISTINCT FROM 'pass')
          AND (p."uniqueKey" IS NULL OR p."uniqueUntil" IS NULL OR p."uniqueUntil" <= now())
          AND (p."hasDependents" IS NOT TRUE OR NOT EXISTS (
                  SELECT FROM "WorkerJobDependency" AS d JOIN "WorkerJobLive" AS c
                  ON c.id = d.child
                  WHERE d.parent = p.id AND c.status IN ('PENDING', 'PROCESSING')))
        ORDER BY p."completedAt"
        LIMIT :batch
        FOR UPDATE OF p SKIP LOCKED
    ), moved AS (
        UPDATE "WorkerJob" AS j SET "archivedAt" = now()
        FROM moving WHERE j.id = moving.id AND j."archivedAt" = 'infinity'
        RETURNING j."completedAt"
    )
    SELECT count(*) AS n, max("completedAt") AS last FROM moved
    """
)

# How many finished jobs the mover would take now (`skiplock history move`'s bar).
HISTORY_MOVABLE = text(
    """
    SELECT count(*) AS n FROM "WorkerJobLive"
    WHERE (status IN ('COMPLETED', 'FAILED')
           AND "completedAt" < now() - make_interval(secs => :after_s))
       OR (status = 'DEAD_LETTER' AND "completedAt" < now() - make_interval(secs => :dead_s))
    """
)

# A partition's rows as the planner counts them (ANALYZE by cleanup, autovacuum's of
# the partition itself): what a DROP forgets, without counting them one by one.
HISTORY_ROWS = text(
    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(format('%I', :name))"
)
# Whether a partition holds a dead letter (cleanup --keep-dead); {} is its name, from
# skiplock_history_partitions(): a partition's own finished index answers.
HISTORY_HAS_DEAD = 'SELECT EXISTS (SELECT FROM "{}" WHERE status = \'DEAD_LETTER\')'

# The edges and batches of jobs that are gone (their history partition dropped: a DROP
# fires no trigger), forgotten as the DELETE trigger of migration 0016 forgets those of a
# deleted job: an edge goes with either end, a batch with its callback.
FORGET_DROPPED_EDGES = text(
    """
    WITH edges AS (
        DELETE FROM "WorkerJobDependency" AS d
        WHERE NOT EXISTS (SELECT FROM "WorkerJob" AS j WHERE j.id = d.parent)
           OR NOT EXISTS (SELECT FROM "WorkerJob" AS j WHERE j.id = d.child)
        RETURNING 1
    ), batches AS (
        DELETE FROM "WorkerBatch" AS b
        WHERE NOT EXISTS (SELECT FROM "WorkerJob" AS j WHERE j.id = b."callbackId")
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM edges) AS edges, (SELECT count(*) FROM batches) AS batches
    """
)
