"""The operator's statements, named and side by side: pauses, the process table,
schedules, backfills, and the reads behind `stats` and `jobs`.

The job table's own life cycle (enqueue, claim, complete, ...) stays in
`sql.py`; these statements read the job table or write the tables of
migration 0003_ops (and the dashboard's action log); the one operator write on
the job table, the dashboard's "run now", is fenced on PENDING. Same rules:
the database clock, bound parameters only.

`stats` must stay fast on a table of tens of millions of rows (docs/lessons.md
"count(*) on a big job table is slow"): PENDING and PROCESSING are counted
exactly through their partial indexes (they are small when the queue is
healthy); dead letters through the finished index; everything else is the
planner's estimate from `pg_class.reltuples`.
"""

from __future__ import annotations

from sqlalchemy import text

# -- pauses ----------------------------------------------------------------------

PAUSE = text(
    """
    INSERT INTO "WorkerJobPause" (type, "pausedBy", reason) VALUES (:type, :by, :reason)
    ON CONFLICT (type) DO NOTHING
    RETURNING type
    """
)
RESUME = text('DELETE FROM "WorkerJobPause" WHERE type = :type RETURNING type')
PAUSED = text(
    """
    SELECT p.type, p."pausedAt", p."pausedBy", p.reason,
           (SELECT count(*) FROM "WorkerJob" j WHERE j.status = 'PENDING' AND j.type = p.type)
               AS pending
    FROM "WorkerJobPause" p ORDER BY p.type
    """
)

# -- the process table -------------------------------------------------------------

# served: the job types the master serves (pool/served.py; migration 0012_routing).
UPSERT_MASTER = text(
    """
    INSERT INTO "WorkerProcess"
        (id, kind, host, pid, state, concurrency, "startedAt", "heartbeatAt", served)
    VALUES (:id, 'master', :host, :pid, :state, :concurrency, to_timestamp(:started_at), now(),
            CAST(:served AS text[]))
    ON CONFLICT (id) DO UPDATE
    SET state = EXCLUDED.state, concurrency = EXCLUDED.concurrency, "heartbeatAt" = now(),
        served = EXCLUDED.served
    """
)

# The master's children as they are now, in one statement: rows of children
# that are gone are deleted, the others inserted or refreshed.
SYNC_CHILDREN = text(
    """
    WITH now_children AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:pids AS int[]), CAST(:slots AS int[]),
            CAST(:started AS float8[]), CAST(:job_ids AS text[]), CAST(:job_types AS text[]),
            CAST(:job_started AS float8[])
        ) AS c(id, pid, slot, started, job_id, job_type, job_started)
    ), gone AS (
        DELETE FROM "WorkerProcess" p
        WHERE p."masterId" = :master_id AND p.id <> ALL(CAST(:ids AS text[]))
    )
    INSERT INTO "WorkerProcess"
        (id, kind, "masterId", host, pid, "slot", "startedAt", "heartbeatAt",
         "jobId", "jobType", "jobStartedAt")
    SELECT c.id, 'child', :master_id, :host, c.pid, c.slot, to_timestamp(c.started), now(),
           c.job_id, c.job_type, to_timestamp(c.job_started)
    FROM now_children c
    ON CONFLICT (id) DO UPDATE
    SET "heartbeatAt" = now(), "jobId" = EXCLUDED."jobId", "jobType" = EXCLUDED."jobType",
        "jobStartedAt" = EXCLUDED."jobStartedAt", "slot" = EXCLUDED."slot"
    """
)

DELETE_MASTER = text('DELETE FROM "WorkerProcess" WHERE id = :id')

# A master that stopped heartbeating (its host died, it was SIGKILLed) and its
# children: the children go by the foreign key's cascade.
PRUNE_PROCESSES = text(
    """
    DELETE FROM "WorkerProcess"
    WHERE kind = 'master' AND "heartbeatAt" < now() - make_interval(secs => :timeout_s)
    RETURNING id, host, pid
    """
)

LIST_PROCESSES = text(
    """
    SELECT p.*, EXTRACT(EPOCH FROM now() - p."heartbeatAt") AS heartbeat_age_s,
           EXTRACT(EPOCH FROM now() - p."jobStartedAt") AS job_age_s,
           j.progress AS job_progress, j."progressMessage" AS job_progress_message
    FROM "WorkerProcess" p
    LEFT JOIN "WorkerJob" j ON j.id = p."jobId" AND j.status = 'PROCESSING'
    ORDER BY p.host, COALESCE(p."masterId", p.id), p.kind DESC, p."slot", p.pid
    """
)

# -- schedules -----------------------------------------------------------------------

DB_NOW = text("SELECT now() AS now")

SCHEDULE_CURSORS = text(
    """SELECT name, "lastOccurrence" FROM "WorkerSchedule" WHERE name = ANY(CAST(:names AS text[]))"""
)

# First sight of a schedule starts it now: a new schedule does not run the
# occurrences before it existed.
START_SCHEDULE = text(
    """
    INSERT INTO "WorkerSchedule" (name, "lastOccurrence") VALUES (:name, :at)
    ON CONFLICT (name) DO NOTHING
    """
)

# Several masters may advance the same schedule; the cursor only moves forward.
ADVANCE_SCHEDULE = text(
    """
    INSERT INTO "WorkerSchedule" (name, "lastOccurrence") VALUES (:name, :at)
    ON CONFLICT (name) DO UPDATE
    SET "lastOccurrence" = GREATEST("WorkerSchedule"."lastOccurrence", EXCLUDED."lastOccurrence"),
        "updatedAt" = now()
    """
)

# -- reads for `stats` ------------------------------------------------------------------

# The jobs: the planner's count summed over the live part and every history partition
# ("WorkerJob" itself is partitioned: it has no rows, no statistics of its own, and
# pg_stat_user_tables does not list it; migration 0022_history). Sizes, dead tuples and
# vacuums: the live part's, the hot table whose bloat matters.
TABLE_ESTIMATE = text(
    """
    WITH leaves AS (
        SELECT sum(greatest(c.reltuples, 0))::bigint AS estimate,
               sum(s.n_live_tup)::bigint AS live
        FROM pg_partition_tree(CAST('"WorkerJob"' AS regclass)) AS t
        JOIN pg_class AS c ON c.oid = t.relid
        JOIN pg_stat_user_tables AS s ON s.relid = t.relid
        WHERE t.isleaf
    )
    SELECT leaves.estimate, leaves.live, s.n_dead_tup AS dead,
           pg_relation_size(c.oid) AS table_bytes,
           pg_total_relation_size(c.oid) AS total_bytes,
           pg_indexes_size(c.oid) AS index_bytes,
           s.last_autovacuum, s.last_vacuum, s.last_autoanalyze, s.last_analyze,
           s.autovacuum_count, s.n_mod_since_analyze
    FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid CROSS JOIN leaves
    WHERE c.oid = CAST('"WorkerJobLive"' AS regclass)
    """
)

DEAD_BY_TYPE = text(
    """SELECT type, count(*) AS n FROM "WorkerJob" WHERE status = 'DEAD_LETTER' GROUP BY type"""
)
FAILED_COUNT = text("""SELECT count(*) AS n FROM "WorkerJob" WHERE status = 'FAILED'""")

# Jobs finished per window, through the finished index ("completedAt" by status).
THROUGHPUT = text(
    """
    SELECT w.minutes,
           (SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED'
              AND "completedAt" > now() - make_interval(mins => w.minutes)) AS completed,
           (SELECT count(*) FROM "WorkerJob" WHERE status = 'DEAD_LETTER'
              AND "completedAt" > now() - make_interval(mins => w.minutes)) AS dead
    FROM unnest(CAST(:windows AS int[])) AS w(minutes)
    """
)

# The oldest transaction that holds the vacuum horizon back: while it is open,
# no dead job row newer than its snapshot can be removed (docs/lessons.md "Queue
# tables bloat"). Prepared transactions and replication slots pin it too.
VACUUM_HORIZON = text(
    """
    SELECT * FROM (
        SELECT 'backend' AS holder, pid::text AS who, datname AS database,
               application_name AS application, state,
               EXTRACT(EPOCH FROM now() - xact_start) AS age_s, age(backend_xmin) AS xid_age
        FROM pg_stat_activity
        WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
        UNION ALL
        SELECT 'prepared transaction', gid, database, NULL, NULL,
               EXTRACT(EPOCH FROM now() - prepared), age(transaction)
        FROM pg_prepared_xacts
        UNION ALL
        SELECT 'replication slot', slot_name, database, plugin, NULL, NULL,
               GREATEST(age(xmin), age(catalog_xmin))
        FROM pg_replication_slots WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL
    ) h
    ORDER BY xid_age DESC NULLS LAST
    LIMIT 1
    """
)

# -- reads for `jobs` ------------------------------------------------------------------------

# Each status is listed in the order its index already keeps, so a listing of a
# huge table reads only `limit` rows.
JOBS_ORDER = {
    "PENDING": 'priority DESC, "availableAt" ASC',
    "PROCESSING": '"lockedAt" ASC',
    "COMPLETED": '"completedAt" DESC',
    "DEAD_LETTER": '"completedAt" DESC',
    "FAILED": '"completedAt" DESC',
    # Ids made by enqueue begin with the time in ms (enqueue.new_job_id): the
    # primary key lists the newest first without sorting the whole table.
    None: "id DESC",
}
JOBS_FILTERS = {
    "status": 'AND status = CAST(:status AS "JobStatus")',
    "type": "AND type = :type",
    "user_id": 'AND "userId" = :user_id',
}
# What a listing shows of each job (`skiplock jobs`, the dashboard's pages).
_LISTED = (
    'SELECT id, type, status::text AS status, priority, attempts, "maxAttempts", "userId", '
    '"idempotencyKey", "createdAt", "availableAt", "startedAt", "completedAt", "lockedBy", '
    'left("lastError", 200) AS "lastError"'
)

LIST_JOBS = _LISTED + """
    FROM "WorkerJob" WHERE true {filters}
    ORDER BY {order}
    LIMIT :limit
"""

# Jobs waiting for a slot of their concurrency key (queue_core/features/limits.py), read
# through the held-back partial index, and the keys that hold the most. Held back
# without a key is parked (queue_core/features/parking.py), counted apart.
HELD_BACK = text(
    """
    SELECT "concurrencyKey" AS key, count(*) AS n FROM "WorkerJob"
    WHERE status = 'PENDING' AND "heldBack" AND "concurrencyKey" IS NOT NULL
    GROUP BY 1 ORDER BY 2 DESC, 1
    """
)

# -- the dashboard (skiplock/dashboard) -----------------------------------------------------

# Every page reads in one read-only transaction with a time limit, so a filter
# that cannot use an index costs the server seconds at most, never minutes, and
# no bug in a page can write. Without parallel workers: a page reads index
# ranges of a few thousand rows, where starting worker processes costs more
# than it saves, and takes CPU from the pools on a busy server.
DASHBOARD_READ_ONLY = text("SET TRANSACTION READ ONLY")
DASHBOARD_TIMEOUT = text(
    """
    SELECT set_config('statement_timeout', :ms, true),
           set_config('max_parallel_workers_per_gather', '0', true)
    """
)

# Jobs finished per minute over the last hour: two ranges of the finished index
# (one per status), so the cost follows the jobs of the last hour, not the table.
THROUGHPUT_BY_MINUTE = text(
    """
    SELECT EXTRACT(EPOCH FROM date_trunc('minute', "completedAt"))::bigint AS minute,
           count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE status = 'DEAD_LETTER') AS dead
    FROM "WorkerJob"
    WHERE status IN ('COMPLETED', 'DEAD_LETTER')
      AND "completedAt" > date_trunc('minute', now()) - interval '59 minutes'
    GROUP BY 1
    """
)

# The job listing pages by keyset (never OFFSET: page 1000 costs what page 1
# costs), in the order of the index each status already has; the cursor is the
# last row's values of that order. The time filter applies to the same column,
# so it narrows the index range instead of filtering rows after the fact.
JOB_LISTINGS: dict[str | None, dict[str, str]] = {
    None: {  # ids made by enqueue begin with the time in ms: newest first, by primary key
        "order": "id DESC", "time": '"createdAt"',
        "after": "AND id < :c_id",
    },
    "PENDING": {  # claim order, through "WorkerJob_claim_idx"
        "order": 'priority DESC, "availableAt" ASC, id ASC', "time": '"availableAt"',
        "after": 'AND (priority < :c_priority OR (priority = :c_priority '
                 'AND ("availableAt", id) > (:c_time, :c_id)))',
    },
    "PROCESSING": {
        "order": '"startedAt" ASC, id ASC', "time": '"startedAt"',
        "after": 'AND ("startedAt", id) > (:c_time, :c_id)',
    },
    **{status: {  # newest first, through the finished (or FAILED) index
        "order": '"completedAt" DESC, id DESC', "time": '"completedAt"',
        "after": 'AND ("completedAt", id) < (:c_time, :c_id)',
    } for status in ("COMPLETED", "DEAD_LETTER", "FAILED")},
}
JOB_LISTING_FILTERS = {
    "status": 'AND status = CAST(:status AS "JobStatus")',
    "type": "AND type = :type",
    "user_id": 'AND "userId" = :user_id',
    "key": "AND \"idempotencyKey\" LIKE :key ESCAPE '\\'",
    # The same prefix as a range of the unique index, added only where the
    # database orders text by code point (C, POSIX, C.UTF-8): there, and only
    # there, the keys that start with a prefix are exactly one range of it.
    "key_low": 'AND "idempotencyKey" >= :key_low AND "idempotencyKey" < :key_high',
    "since": "AND {time} >= :since",
    "until": "AND {time} < :until",
}
# The dashboard's listing also shows the start of each payload, read only where
# the stored value is small: one of a megabyte (the default limit) would be read
# and turned into text whole for its first characters, fifty times a page. It is
# read for the page's rows alone, after the LIMIT: a listing without an index of
# its order sorts every matching row, and would turn each one's payload into text.
LIST_JOB_PAGE = """
    SELECT page.*, preview.* FROM (""" + _LISTED + """
        FROM "WorkerJob" WHERE true {filters} {after}
        ORDER BY {order}
        LIMIT :limit
    ) AS page
    CROSS JOIN LATERAL (
        SELECT CASE WHEN pg_column_size(j.payload) <= 2048 THEN left(j.payload::text, 300) END
                   AS "payloadText",
               pg_column_size(j.payload) AS "payloadBytes"
        FROM "WorkerJob" AS j WHERE j.id = page.id
    ) AS preview
    ORDER BY {order}
"""

# Whether text sorts by code point here (see JOB_LISTING_FILTERS "key_low").
# to_jsonb: datlocprovider exists from PostgreSQL 15 on (ICU collations sort
# differently whatever datcollate says).
DATABASE_COLLATION = text(
    """
    SELECT datcollate AS collate, to_jsonb(d) ->> 'datlocprovider' AS provider
    FROM pg_database d WHERE datname = current_database()
    """
)

# Search: a job id or an idempotency key, each through its unique index.
FIND_JOB = text(
    """
    SELECT id FROM "WorkerJob" WHERE id = :q
    UNION
    SELECT id FROM "WorkerJob" WHERE "idempotencyKey" = :q
    LIMIT 2
    """
)

# A job's columns that the job page does not read by name (sql.GET_JOB lists its
# own): those of later migrations, shown under their names (dashboard/job_page.py).
JOB_OTHER_COLUMNS = text(
    'SELECT to_jsonb(j) - CAST(:known AS text[]) FROM "WorkerJob" AS j WHERE id = :id'
)

# The child that holds a job (its worker id is the job's "lockedBy") and its master.
JOB_WORKER = text(
    """
    SELECT c.id, c.host, c.pid, c."slot", c."heartbeatAt", c."startedAt",
           EXTRACT(EPOCH FROM now() - c."heartbeatAt") AS heartbeat_age_s,
           m.pid AS master_pid, m.state AS master_state
    FROM "WorkerProcess" c LEFT JOIN "WorkerProcess" m ON m.id = c."masterId"
    WHERE c.id = :locked_by
    """
)

ALL_SCHEDULE_CURSORS = text(
    'SELECT name, "lastOccurrence", "updatedAt" FROM "WorkerSchedule" ORDER BY name'
)

# Run now: a waiting PENDING job (delayed, or backing off after a failure)
# becomes ready at once. Only PENDING rows: a job that was claimed meanwhile
# is left alone, and zero rows says so.
RUN_NOW = text(
    """
    UPDATE "WorkerJob" SET "availableAt" = now()
    WHERE id = :id AND status = 'PENDING' AND "availableAt" > now()
    RETURNING id
    """
)

LOG_ACTION = text(
    """
    INSERT INTO "DashboardAction" (who, address, action, target, affected, detail)
    VALUES (:who, :address, :action, :target, :affected, CAST(:detail AS jsonb))
    """
)
RECENT_ACTIONS = text(
    """
    SELECT id, at, who, address, action, target, affected, detail
    FROM "DashboardAction" ORDER BY id DESC LIMIT :limit
    """
)
ACTIONS_ON = text(
    """
    SELECT id, at, who, address, action, target, affected, detail
    FROM "DashboardAction" WHERE target = :target ORDER BY at DESC LIMIT :limit
    """
)

# -- the table as it is, for `skiplock prisma-schema` (skiplock/ops/prisma_schema.py) ------------

TABLE_COLUMNS = text(
    """
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS sql_type,
           t.typtype AS kind, t.typname AS type_name, a.attnotnull AS not_null,
           pg_get_expr(d.adbin, d.adrelid) AS "default"
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
    """
)
TABLE_EXISTS = text("SELECT to_regclass(:table) IS NOT NULL")
TABLE_INDEXES = text(
    """
    SELECT c.relname AS name, i.indisprimary AS is_primary, i.indisunique AS is_unique,
           array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 ORDER BY k.n) AS columns,
           array(SELECT (o & 1) = 1 FROM unnest(i.indoption::int2[]) WITH ORDINALITY AS x(o, n)
                 ORDER BY x.n) AS descending,
           pg_get_expr(i.indpred, i.indrelid) AS predicate
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = to_regclass(:table)
    ORDER BY i.indisprimary DESC, c.relname
    """
)
TABLE_FOREIGN_KEYS = text(
    """
    SELECT con.conname AS name, con.confrelid::regclass::text AS target,
           array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                 ORDER BY k.n) AS columns,
           array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
                 ORDER BY k.n) AS target_columns,
           con.confdeltype AS on_delete, con.confupdtype AS on_update
    FROM pg_constraint con
    WHERE con.conrelid = to_regclass(:table) AND con.contype = 'f'
    ORDER BY con.conname
    """
)
TABLE_CHECKS_AND_TRIGGERS = text(
    """
    SELECT 'check' AS kind, conname AS name, pg_get_constraintdef(oid) AS definition
    FROM pg_constraint WHERE conrelid = to_regclass(:table) AND contype = 'c'
    UNION ALL
    SELECT 'trigger', tgname, pg_get_triggerdef(oid)
    FROM pg_trigger WHERE tgrelid = to_regclass(:table) AND NOT tgisinternal
    ORDER BY 1, 2
    """
)
ENUM_LABELS = text(
    """
    SELECT enumlabel FROM pg_enum WHERE enumtypid = to_regtype(:type) ORDER BY enumsortorder
    """
)
