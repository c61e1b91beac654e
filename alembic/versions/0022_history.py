"""History: "WorkerJob" becomes a partitioned table, live work in one part, finished jobs in
partitions by the time they were archived, so the hot part stays small and retention is a
DROP TABLE.

Revision ID: 0022_history
Revises: 0021_fairness
Create Date: 2026-12-05

    "WorkerJob"          PARTITION BY RANGE ("archivedAt")        the name every client uses
      "WorkerJobLive"      FROM ('infinity') TO (MAXVALUE)        the table as it was, renamed
      "WorkerJobHistory"   FROM (MINVALUE) TO ('infinity')        PARTITION BY RANGE ("archivedAt")
        "WorkerJobHistory_20261205T0000"  one per width (`skiplock.history_width`, 1 day)

Why the root keeps the name (docs/schema.md, "History"): every client that never names
"archivedAt" (the seed's Prisma client, psql, Django, SQLAlchemy) keeps working. An
INSERT lands in the live part (the column's default is 'infinity'); a read by id, by
idempotency key, a count by status, an UPDATE, all see both parts; an UPDATE that makes
an archived job PENDING again moves it back to the live part (the trigger on
"WorkerJobHistory" below), in the same statement.

- "WorkerJobLive" is the old table renamed: every index, constraint, ACL and ROW trigger
  stays on it. A STATEMENT trigger fires only for the table a statement names, so each
  statement trigger of the old table is made again on the root (and kept on the part,
  for statements that name it).
- "WorkerJobHistory" has CHECK (status IN the finished statuses): the planner leaves it
  out of `status = 'PENDING'` queries (constraint exclusion). Its indexes (id, key,
  finished by time, type, user) are made on each of its partitions.
- The plpgsql functions that read or write live rows (`_LIVE_FUNCTIONS`) name
  "WorkerJobLive": on the root, a statement without a condition on "archivedAt" is
  planned correctly but locks every history partition and its indexes.
- Idempotency keys stay unique across both parts: the live part's unique index, and an
  AFTER INSERT row trigger that refuses (unique_violation, as the index would: Prisma's
  P2002) a key that is in history. AFTER, because the index insertion first waits for a
  mover that is moving the key's row; the trigger's query then takes a new snapshot and
  sees the moved row.
- Partitions are made by `skiplock_history_partition(at)` (SECURITY DEFINER: the pool's
  role need not own the table), as CREATE TABLE ... LIKE + ATTACH PARTITION (SHARE UPDATE
  EXCLUSIVE on "WorkerJobHistory": readers go on; CREATE TABLE ... PARTITION OF would take
  ACCESS EXCLUSIVE), with a CHECK of its bounds so that the ATTACH does not scan.

The online part. alembic runs every pending migration in one transaction. The ATTACH of a
big live table would scan it under ACCESS EXCLUSIVE unless a valid CHECK proves the bound:
`skiplock migrate` first adds the column (a fast default) and the CHECK (NOT VALID, then
VALIDATE: a scan under SHARE UPDATE EXCLUSIVE, while the queue runs), each step in its own
transaction (queue_core/database/migrate.py, `HISTORY_PREPARE`); this step does the same
where they were not done (a fresh or small table, an offline script), then the renames
and the ATTACH under a short lock_timeout. Finished rows of an adopted table move to
history afterwards, batched, by the mover (queue_core/features/history.py).
"""

from alembic import op

from skiplock.queue_core.database.migrate import HISTORY_PREPARE

revision = "0022_history"
down_revision = "0021_fairness"
branch_labels = None
depends_on = None

FINISHED = "('COMPLETED', 'FAILED', 'DEAD_LETTER')"

# The functions whose queries are about live rows only: slots, sequences, fair turns,
# rates, dependencies, policies. Each names "WorkerJobLive" instead of "WorkerJob".
_LIVE_FUNCTIONS = (
    "skiplock_apply_policy",  # frees scoped keys of live jobs whose window is over
    "skiplock_batch_ready",  # a callback waits: its batch's parents are live
    "skiplock_fair_fill",  # pending jobs of a fair key
    "skiplock_fair_turns",
    "skiplock_fill_slots",  # pending and running jobs of a concurrency key
    "skiplock_rate_admit",  # pending jobs of a rate key
    "skiplock_recount_slots",
    "skiplock_resolve_edges",  # a parent's waiting dependents
    "skiplock_sequence_advance",  # the jobs in a sequence's line
    "skiplock_sequence_insert",
    "skiplock_sequence_moved",
)

# Settings read as intervals ("1 day", "90s"); unset or not an interval: the fallback.
_INTERVAL_SETTING = """
    CREATE FUNCTION skiplock_interval_setting(name text, fallback interval) RETURNS interval
    LANGUAGE plpgsql STABLE AS $$
    DECLARE
        v text := current_setting(name, true);
    BEGIN
        IF v IS NULL OR trim(v) = '' THEN
            RETURN fallback;
        END IF;
        RETURN v::interval;
    EXCEPTION WHEN others THEN
        RETURN fallback;
    END $$
"""

# A partition's width: `skiplock.history_width` (ALTER DATABASE ... SET), one day when
# unset, never under a minute (partitions are named by their lower bound, to the minute).
_WIDTH = """
    CREATE FUNCTION skiplock_history_width() RETURNS interval
    LANGUAGE sql STABLE AS $$
        SELECT greatest(skiplock_interval_setting('skiplock.history_width', interval '1 day'),
                        interval '1 minute')
    $$
"""

# Every partition of "WorkerJobHistory" with its bounds (read from its bound expression:
# the catalog keeps no other form of them).
_PARTITIONS = """
    CREATE FUNCTION skiplock_history_partitions()
    RETURNS TABLE (name text, lower timestamptz, upper timestamptz)
    LANGUAGE sql STABLE AS $$
        SELECT c.relname::text, m[1]::timestamptz, m[2]::timestamptz
        FROM pg_inherits AS i
        JOIN pg_class AS c ON c.oid = i.inhrelid
        CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                        'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS m
        WHERE i.inhparent = '"WorkerJobHistory"'::regclass
        ORDER BY 2
    $$
"""

# The partition that holds `at`, made if missing: aligned on the width (in UTC), shrunk to
# fit between existing partitions (the width may have changed since they were made).
# Concurrent callers are serialized by an advisory lock, and the second finds the first's.
_PARTITION = """
    CREATE FUNCTION skiplock_history_partition(at timestamptz) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
    DECLARE
        secs float8 := extract(epoch FROM skiplock_history_width());
        lo timestamptz;
        hi timestamptz;
        name text;
    BEGIN
        IF at IS NULL OR NOT isfinite(at) THEN
            RETURN NULL;
        END IF;
        IF EXISTS (SELECT FROM skiplock_history_partitions() AS p
                   WHERE at >= p.lower AND at < p.upper) THEN
            RETURN NULL;
        END IF;
        PERFORM pg_advisory_xact_lock(7596553061427360116);  -- 'skiphist'
        IF EXISTS (SELECT FROM skiplock_history_partitions() AS p
                   WHERE at >= p.lower AND at < p.upper) THEN
            RETURN NULL;
        END IF;
        lo := to_timestamp(floor(extract(epoch FROM at) / secs) * secs);
        hi := to_timestamp(floor(extract(epoch FROM at) / secs) * secs + secs);
        lo := greatest(lo, (SELECT max(p.upper) FROM skiplock_history_partitions() AS p
                            WHERE p.upper <= at));
        hi := least(hi, (SELECT min(p.lower) FROM skiplock_history_partitions() AS p
                         WHERE p.lower > at));
        name := 'WorkerJobHistory_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MI');
        IF to_regclass(format('%I', name)) IS NOT NULL THEN  -- left by a failed attach
            EXECUTE format('DROP TABLE %I', name);
        END IF;
        EXECUTE format('CREATE TABLE %I (LIKE "WorkerJobHistory" INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS, CONSTRAINT %I CHECK ("archivedAt" >= %L '
                       'AND "archivedAt" < %L))', name, name || '_bounds', lo, hi);
        EXECUTE format('ALTER TABLE "WorkerJobHistory" ATTACH PARTITION %I '
                       'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
        RETURN name;
    END $$
"""

# An archived job that an UPDATE makes PENDING or PROCESSING again (a retry of a dead
# letter, Prisma's updateMany) goes back to the live part, in the same statement.
_REVIVED = """
    CREATE FUNCTION skiplock_history_revived() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        NEW."archivedAt" := 'infinity';
        RETURN NEW;
    END $$
"""

# A new live job whose idempotency key a job in history has: the error the unique index
# would give (the message and detail Prisma reads to report P2002 on "idempotencyKey").
_KEY_ARCHIVED = """
    CREATE FUNCTION skiplock_key_archived() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT FROM "WorkerJobHistory"
                   WHERE "idempotencyKey" = NEW."idempotencyKey") THEN
            RAISE EXCEPTION 'duplicate key value violates unique constraint "%"',
                'WorkerJob_idempotencyKey_key'
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'WorkerJob_idempotencyKey_key',
                      TABLE = 'WorkerJob', SCHEMA = current_schema(),
                      DETAIL = format('Key ("idempotencyKey")=(%s) already exists.',
                                      NEW."idempotencyKey");
        END IF;
        RETURN NULL;
    END $$
"""

# A job's edges and its batch are forgotten when it is deleted (migration 0016); a job the
# mover moves to history is deleted from the live part only to be inserted in history
# (the AFTER trigger sees the row there): its edges and batch stay, so that `skiplock
# job`, `batch` and `wait(batch)` read them as long as the job is kept. Cleanup forgets
# those of jobs whose partition it dropped (sql.FORGET_DROPPED_EDGES).
_DEPENDENCY_DELETED = """
    CREATE OR REPLACE FUNCTION skiplock_dependency_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
{guard}        IF OLD."hasDependents" THEN
            IF OLD.status IN ('PENDING', 'PROCESSING') THEN
                PERFORM skiplock_resolve_edges(OLD.id, 'DELETED', NULL);
            END IF;
            DELETE FROM "WorkerJobDependency" WHERE parent = OLD.id;
        END IF;
        IF OLD."waitingFor" IS NOT NULL THEN
            DELETE FROM "WorkerJobDependency" WHERE child = OLD.id;
            DELETE FROM "WorkerBatch" WHERE "callbackId" = OLD.id;
        END IF;
        RETURN NULL;
    END $$
"""
_MOVED_TO_HISTORY = """        IF EXISTS (SELECT FROM "WorkerJobHistory" WHERE id = OLD.id) THEN
            RETURN NULL;  -- moved, not deleted
        END IF;
"""

# Each statement trigger of the live part, made again on the root; each role's grants on
# the live part, given on the root too, and SELECT on history (the key trigger reads it).
_ROOT_TRIGGERS_AND_GRANTS = """
DO $$
DECLARE
    t record;
    g record;
BEGIN
    FOR t IN SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger
             WHERE tgrelid = '"WorkerJobLive"'::regclass AND NOT tgisinternal
               AND tgtype & 1 = 0 LOOP
        EXECUTE regexp_replace(t.def, ' ON (\\S+\\.)?"WorkerJobLive" ', ' ON "WorkerJob" ');
    END LOOP;
    -- A foreign key of the old table (the seed's cascade to its "User"), on the root: the
    -- live part's own is attached to it as it is (no validation), history gets its own.
    FOR t IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = '"WorkerJobLive"'::regclass AND contype = 'f' LOOP
        EXECUTE format('ALTER TABLE "WorkerJob" ADD CONSTRAINT %I %s', t.conname, t.def);
    END LOOP;
    FOR g IN SELECT a.privilege_type, a.grantee::regrole::text AS grantee
             FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '"WorkerJobLive"'::regclass AND a.grantee <> 0
               AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %s ON "WorkerJob" TO %s', g.privilege_type, g.grantee);
        EXECUTE format('GRANT SELECT ON "WorkerJobHistory" TO %s', g.grantee);
    END LOOP;
    FOR g IN SELECT a.privilege_type FROM pg_class AS c, aclexplode(c.relacl) AS a
             WHERE c.oid = '"WorkerJobLive"'::regclass AND a.grantee = 0 LOOP
        EXECUTE format('GRANT %s ON "WorkerJob" TO PUBLIC', g.privilege_type);
        EXECUTE 'GRANT SELECT ON "WorkerJobHistory" TO PUBLIC';
    END LOOP;
END $$
"""

# The functions of `_LIVE_FUNCTIONS`, their text's "WorkerJob" replaced (`to` "WorkerJobLive",
# or back on downgrade).
_REWRITE = """
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc AS p
             WHERE p.proname = ANY(ARRAY[{names}]) AND p.prokind = 'f' LOOP
        EXECUTE replace(pg_get_functiondef(f.oid), '"{old}"', '"{new}"');
    END LOOP;
END $$
"""


def _rewrite(old: str, new: str) -> str:
    names = ", ".join(f"'{n}'" for n in _LIVE_FUNCTIONS)
    return _REWRITE.format(names=names, old=old, new=new)


def upgrade() -> None:
    for step in HISTORY_PREPARE:  # done already by `skiplock migrate` on a big table
        op.execute(step)
    op.execute("SET LOCAL lock_timeout = '30s'")
    op.execute('ALTER TABLE "WorkerJob" RENAME TO "WorkerJobLive"')
    op.execute('CREATE TABLE "WorkerJob" (LIKE "WorkerJobLive" INCLUDING DEFAULTS '
               'INCLUDING CONSTRAINTS) PARTITION BY RANGE ("archivedAt")')
    op.execute('ALTER TABLE "WorkerJob" DROP CONSTRAINT "WorkerJob_live_check"')
    op.execute('ALTER TABLE "WorkerJob" ATTACH PARTITION "WorkerJobLive" '
               "FOR VALUES FROM ('infinity') TO (MAXVALUE)")
    op.execute('CREATE TABLE "WorkerJobHistory" PARTITION OF "WorkerJob" '
               "FOR VALUES FROM (MINVALUE) TO ('infinity') PARTITION BY RANGE (\"archivedAt\")")
    op.execute('ALTER TABLE "WorkerJobHistory" ADD CONSTRAINT "WorkerJobHistory_finished_check" '
               f"CHECK (status IN {FINISHED})")
    for name, columns in (("id", "id"), ("key", '"idempotencyKey"'),
                          ("finished", 'status, "completedAt"'), ("type", 'type, "completedAt"'),
                          ("user", '"userId", type')):
        op.execute(f'CREATE INDEX "WorkerJobHistory_{name}_idx" ON "WorkerJobHistory" ({columns})')
    for statement in (_INTERVAL_SETTING, _WIDTH, _PARTITIONS, _PARTITION, _REVIVED,
                      _KEY_ARCHIVED):
        op.execute(statement)
    op.execute(
        'CREATE TRIGGER "WorkerJobHistory_revived" BEFORE UPDATE ON "WorkerJobHistory" '
        f"FOR EACH ROW WHEN (NEW.status NOT IN {FINISHED}) "
        "EXECUTE FUNCTION skiplock_history_revived()"
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_key_archived" AFTER INSERT ON "WorkerJobLive" '
        """FOR EACH ROW WHEN (NEW."idempotencyKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_key_archived()"""
    )
    op.execute(_ROOT_TRIGGERS_AND_GRANTS)
    op.execute(_rewrite("WorkerJob", "WorkerJobLive"))
    op.execute(_DEPENDENCY_DELETED.format(guard=_MOVED_TO_HISTORY))
    # The partitions of today and the next period, so that the first move finds them.
    op.execute("SELECT skiplock_history_partition(now()), "
               "skiplock_history_partition(now() + skiplock_history_width())")


def downgrade() -> None:
    # Every archived job back into the old table (the history is what cleanup keeps), its
    # triggers off meanwhile: the rows come back as they are, not as new jobs.
    op.execute('DROP TRIGGER "WorkerJob_key_archived" ON "WorkerJobLive"')
    op.execute('ALTER TABLE "WorkerJob" DETACH PARTITION "WorkerJobLive"')
    op.execute('ALTER TABLE "WorkerJobLive" DROP CONSTRAINT "WorkerJob_live_check"')
    op.execute('ALTER TABLE "WorkerJobLive" DISABLE TRIGGER USER')
    op.execute('INSERT INTO "WorkerJobLive" SELECT * FROM "WorkerJobHistory"')
    op.execute('ALTER TABLE "WorkerJobLive" ENABLE TRIGGER USER')
    op.execute('DROP TABLE "WorkerJob"')  # the root, with "WorkerJobHistory" and its parts
    op.execute('ALTER TABLE "WorkerJobLive" RENAME TO "WorkerJob"')
    op.execute(_rewrite("WorkerJobLive", "WorkerJob"))
    op.execute(_DEPENDENCY_DELETED.format(guard=""))  # as 0016 made it
    for function in ("skiplock_key_archived()", "skiplock_history_revived()",
                     "skiplock_history_partition(timestamptz)", "skiplock_history_partitions()",
                     "skiplock_history_width()", "skiplock_interval_setting(text, interval)"):
        op.execute(f"DROP FUNCTION {function}")
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN "archivedAt"')
