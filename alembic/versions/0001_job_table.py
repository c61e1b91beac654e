"""The job table: the Prisma schema's "WorkerJob", with indexes that match the queries.

Revision ID: 0001_job_table
Revises:
Create Date: 2026-11-28

Compatible with the Prisma schema of the TypeScript service skiplock succeeds
(docs/README.md, "The seed": quoted column names, the "JobStatus" enum and its
values) so that a row written by that service is claimed here. Differences, each on purpose:

- `type` is open text, so a new job type needs no migration.
- `result` (jsonb, nullable) keeps what a handler returned.
- times are `timestamptz`, always set from the database clock (`now()`).
- `id` has a database default, so a plain INSERT (as a script or the original
  service's raw SQL would do) works without supplying one.
- The claim is served by a partial index over PENDING rows in the claim's own
  order (docs/lessons.md: an index that does not match the ORDER BY sorts every ready
  row; one over ready rows only stays small however many rows are finished).
  Recovery and cleanup get partial indexes of their own; the Prisma schema's
  (status, availableAt, priority) index would serve neither well.
- Storage: a job row is updated three or four times in its life. fillfactor 85
  leaves room on each page for the new row versions, and autovacuum runs after
  2 % of the table changed instead of 20 %, so dead tuples do not pile up on a
  hot queue table (docs/lessons.md "Queue tables bloat").
- A statement-level trigger NOTIFYs `skiplock_jobs` on insert, so that idle
  workers wake at once whoever inserted the row (polling still covers
  connection poolers where LISTEN does not work).

Adoption. The original service made "WorkerJob" with Prisma before skiplock
arrived (enums "JobType" and "JobStatus", `TIMESTAMP(3)` columns, the four
`@@index`es, a cascading foreign key to its own "User"). Where such a table
exists, this step upgrades it in place instead of creating one, inside the
one transaction and under the lock of `skiplock migrate` (alembic/env.py):

- `type` becomes text and the enum "JobType" is dropped (revision
  0004_prisma_types makes it an open domain over text, so the service's Prisma
  client still casts to it and any job type is accepted); `status` keeps the
  "JobStatus" enum, whose labels must be the Prisma schema's;
- the five times become `timestamptz`, read as UTC (Prisma writes UTC);
- the defaults, checks, storage settings, `result`, the partial indexes and
  the insert trigger of a fresh table are added; Prisma's indexes on
  (status, availableAt, priority), (type, status) and (lockedAt) are dropped:
  skiplock's partial indexes serve those queries, and each index is one
  more write per row version on the hottest table;
- every row keeps its meaning: pending rows are claimed, a row another worker
  left PROCESSING is rescued by stuck recovery, finished rows stay finished;
- the foreign key to "User" and any other column or index stay as they are.

The changes to columns are one ALTER TABLE, so the table is rewritten once,
holding its lock for that long: the whole adoption of a million jobs took
7 s on a 2-core VM (docs/schema.md).
`skiplock migrate --sql --from prisma` prints the same statements.
"""

from alembic import context, op
from sqlalchemy import text

revision = "0001_job_table"
down_revision = None
branch_labels = ("skiplock",)
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
            CREATE TYPE "JobStatus" AS ENUM
                ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'DEAD_LETTER');
        EXCEPTION WHEN duplicate_object THEN NULL;
        END $$
        """
    )
    if _adopting():
        _adopt()
    else:
        _create()
    _indexes_and_trigger()


def _adopting() -> bool:
    if context.is_offline_mode():
        return context.config.attributes.get("adopt") == "prisma"
    return op.get_bind().execute(text("""SELECT to_regclass('"WorkerJob"') IS NOT NULL""")).scalar()


def _create() -> None:
    op.execute(
        """
        CREATE TABLE "WorkerJob" (
            id               text        PRIMARY KEY DEFAULT gen_random_uuid()::text,
            type             text        NOT NULL CHECK (length(type) BETWEEN 1 AND 200),
            payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
            status           "JobStatus" NOT NULL DEFAULT 'PENDING',
            priority         integer     NOT NULL DEFAULT 0,
            "availableAt"    timestamptz NOT NULL DEFAULT now(),
            attempts         integer     NOT NULL DEFAULT 0,
            "maxAttempts"    integer     NOT NULL DEFAULT 3 CHECK ("maxAttempts" >= 1),
            "lastError"      text,
            "lockedAt"       timestamptz,
            "lockedBy"       text,
            "idempotencyKey" text,
            "userId"         text,
            "createdAt"      timestamptz NOT NULL DEFAULT now(),
            "startedAt"      timestamptz,
            "completedAt"    timestamptz,
            result           jsonb
        ) WITH (
            fillfactor = 85,
            autovacuum_vacuum_scale_factor = 0.02,
            autovacuum_analyze_scale_factor = 0.02,
            autovacuum_vacuum_insert_scale_factor = 0.05
        )
        """
    )
    op.execute(
        'CREATE UNIQUE INDEX "WorkerJob_idempotencyKey_key" ON "WorkerJob" ("idempotencyKey")'
    )
    # The Prisma schema's index for a user's jobs (and the cascade from an application's "User").
    op.execute('CREATE INDEX "WorkerJob_userId_type_idx" ON "WorkerJob" ("userId", type)')


# The columns of the Prisma schema's model, which a table to adopt must have.
_SEED_COLUMNS = ("id", "type", "payload", "status", "priority", "availableAt", "attempts",
                 "maxAttempts", "lastError", "lockedAt", "lockedBy", "idempotencyKey", "userId",
                 "createdAt", "startedAt", "completedAt")
_TIMES = ("availableAt", "lockedAt", "createdAt", "startedAt", "completedAt")
# Prisma's indexes that skiplock's partial indexes replace.
_PRISMA_INDEXES = ("WorkerJob_status_availableAt_priority_idx", "WorkerJob_type_status_idx",
                   "WorkerJob_lockedAt_idx")
_COUNT = text("""
    SELECT count(*) AS total,
           count(*) FILTER (WHERE status::text = 'PENDING') AS pending,
           count(*) FILTER (WHERE status::text = 'PROCESSING') AS processing
    FROM "WorkerJob"
""")

# Checked first, so that a table skiplock cannot run on is refused with its
# reason before anything changes.
_CHECK = """
DO $$
DECLARE
    missing text;
BEGIN
    SELECT string_agg(format('%I', wanted), ', ' ORDER BY n) INTO missing
    FROM unnest(ARRAY[{columns}]) WITH ORDINALITY AS c(wanted, n)
    WHERE NOT EXISTS (SELECT FROM pg_attribute
                      WHERE attrelid = '"WorkerJob"'::regclass AND attname = wanted
                        AND attnum > 0 AND NOT attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'skiplock cannot adopt the table "WorkerJob" of this database: it has no '
            'column %; skiplock adopts the "WorkerJob" that Prisma makes from the seed''s model '
            '(rename this table, or use another database)', missing;
    END IF;
    IF (SELECT atttypid FROM pg_attribute
        WHERE attrelid = '"WorkerJob"'::regclass AND attname = 'status')
           IS DISTINCT FROM to_regtype('"JobStatus"')
       OR NOT (SELECT array_agg(enumlabel::text) FROM pg_enum
               WHERE enumtypid = to_regtype('"JobStatus"'))
              @> ARRAY['PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'DEAD_LETTER'] THEN
        RAISE EXCEPTION 'skiplock cannot adopt the table "WorkerJob": its column status is not '
            'the enum "JobStatus" with the values PENDING, PROCESSING, COMPLETED, FAILED and '
            'DEAD_LETTER';
    END IF;
END $$
"""

# Built here because they depend on what Prisma made (a type column already
# text, a time already timestamptz); run as one ALTER TABLE: one rewrite.
_CONVERT = """
DO $$
DECLARE
    changes text[] := ARRAY[]::text[];
    name text;
BEGIN
    IF (SELECT atttypid FROM pg_attribute
        WHERE attrelid = '"WorkerJob"'::regclass AND attname = 'type') <> 'text'::regtype THEN
        changes := changes || 'ALTER COLUMN type TYPE text USING type::text'::text;
    END IF;
    FOR name IN SELECT attname FROM pg_attribute
                WHERE attrelid = '"WorkerJob"'::regclass AND attname IN ({times})
                  AND atttypid = 'timestamp'::regtype
                ORDER BY attnum LOOP
        changes := changes || format(
            'ALTER COLUMN %I TYPE timestamptz USING %I AT TIME ZONE ''UTC''', name, name);
    END LOOP;
    IF cardinality(changes) > 0 THEN
        EXECUTE 'ALTER TABLE "WorkerJob" ' || array_to_string(changes, ', ');
    END IF;
END $$
"""
_COMPLETE_THE_TABLE = """
ALTER TABLE "WorkerJob"
    ALTER COLUMN id SET DEFAULT gen_random_uuid()::text,
    ALTER COLUMN payload SET DEFAULT '{}'::jsonb,
    ALTER COLUMN "availableAt" SET DEFAULT now(),
    ALTER COLUMN "createdAt" SET DEFAULT now(),
    ADD COLUMN result jsonb,
    ADD CONSTRAINT "WorkerJob_type_check" CHECK (length(type) BETWEEN 1 AND 200),
    ADD CONSTRAINT "WorkerJob_maxAttempts_check" CHECK ("maxAttempts" >= 1),
    SET (fillfactor = 85,
         autovacuum_vacuum_scale_factor = 0.02,
         autovacuum_analyze_scale_factor = 0.02,
         autovacuum_vacuum_insert_scale_factor = 0.05)
"""

# The enum gives way to the open domain of 0004_prisma_types, which a Prisma
# client generated from the original schema casts to just the same.
_DROP_TYPE_ENUM = """
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_type WHERE oid = to_regtype('"JobType"') AND typtype = 'e') THEN
        DROP TYPE "JobType";
    END IF;
EXCEPTION WHEN dependent_objects_still_exist THEN
    RAISE EXCEPTION 'skiplock cannot adopt "WorkerJob": it replaces the enum "JobType" by an '
        'open domain over text of the same name, and other objects still use the enum (%)',
        SQLERRM;
END $$
"""


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _adopt() -> None:
    """Upgrade the "WorkerJob" Prisma made into the table `_create` makes (see the docstring)."""
    op.execute(_CHECK.format(columns=_quoted(_SEED_COLUMNS)))
    counts = None if context.is_offline_mode() else op.get_bind().execute(_COUNT).one()
    for index in _PRISMA_INDEXES:  # before the rewrite, which would rebuild them
        op.execute(f'DROP INDEX IF EXISTS "{index}"')
    op.execute(_CONVERT.format(times=_quoted(_TIMES)))
    op.execute(_COMPLETE_THE_TABLE)
    op.execute('CREATE INDEX IF NOT EXISTS "WorkerJob_userId_type_idx" '
               'ON "WorkerJob" ("userId", type)')
    op.execute(_DROP_TYPE_ENUM)
    if counts is not None:
        context.config.attributes.setdefault("notes", []).append(
            f'adopted the "WorkerJob" that Prisma made: {counts.total} jobs kept '
            f"({counts.pending} pending, {counts.processing} processing); type is open text, "
            "times are timestamptz (read as UTC), skiplock's partial indexes replace Prisma's on "
            "(status, availableAt, priority), (type, status) and (lockedAt)")


def _indexes_and_trigger() -> None:
    # The claim: WHERE status = 'PENDING' AND "availableAt" <= now()
    #            ORDER BY priority DESC, "availableAt" ASC
    op.execute(
        'CREATE INDEX "WorkerJob_claim_idx" ON "WorkerJob" (priority DESC, "availableAt" ASC) '
        "WHERE status = 'PENDING'"
    )
    # Stats of pending work by type (ready vs scheduled) and type-filtered claims.
    op.execute(
        'CREATE INDEX "WorkerJob_pending_type_idx" ON "WorkerJob" (type, "availableAt") '
        "WHERE status = 'PENDING'"
    )
    # Recovery: running jobs whose heartbeat is too old.
    op.execute(
        'CREATE INDEX "WorkerJob_processing_idx" ON "WorkerJob" ("lockedAt") '
        "WHERE status = 'PROCESSING'"
    )
    # Cleanup and the dead-letter views: finished rows by age.
    op.execute(
        'CREATE INDEX "WorkerJob_finished_idx" ON "WorkerJob" (status, "completedAt") '
        "WHERE status IN ('COMPLETED', 'DEAD_LETTER')"
    )
    op.execute(
        """
        CREATE FUNCTION skiplock_notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('skiplock_jobs', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_notify" AFTER INSERT ON "WorkerJob" '
        "FOR EACH STATEMENT EXECUTE FUNCTION skiplock_notify_jobs()"
    )


def downgrade() -> None:
    op.execute('DROP TABLE "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_notify_jobs()")
    op.execute('DROP TYPE "JobStatus"')
