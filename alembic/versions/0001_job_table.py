"""The job table: the seed's "WorkerJob", with indexes that match the queries.

Revision ID: 0001_job_table
Revises:
Create Date: 2026-11-28

Compatible with the seed's Prisma schema (quoted column names, the "JobStatus"
enum and its values) so that a row written by the seed's service is claimed
here. Differences, each on purpose:

- `type` is open text, so a new job type needs no migration.
- `result` (jsonb, nullable) keeps what a handler returned.
- times are `timestamptz`, always set from the database clock (`now()`).
- `id` has a database default, so a plain INSERT (as a script or the seed's
  raw SQL would do) works without supplying one.
- The claim is served by a partial index over PENDING rows in the claim's own
  order (docs/lessons.md: an index that does not match the ORDER BY sorts every ready
  row; one over ready rows only stays small however many rows are finished).
  Recovery and cleanup get partial indexes of their own; the seed's
  (status, availableAt, priority) index would serve neither well.
- Storage: a job row is updated three or four times in its life. fillfactor 85
  leaves room on each page for the new row versions, and autovacuum runs after
  2 % of the table changed instead of 20 %, so dead tuples do not pile up on a
  hot queue table (docs/lessons.md "Queue tables bloat").
- A statement-level trigger NOTIFYs `skiplock_jobs` on insert, so that idle
  workers wake at once whoever inserted the row (polling still covers
  connection poolers where LISTEN does not work).
"""

from alembic import op

revision = "0001_job_table"
down_revision = None
branch_labels = None
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
    # The seed's index for a user's jobs (and the cascade from "User").
    op.execute('CREATE INDEX "WorkerJob_userId_type_idx" ON "WorkerJob" ("userId", type)')
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
