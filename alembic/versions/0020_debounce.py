"""Debounce (one pending job per key, moved or replaced by later enqueues) and priority aging.

Revision ID: 0020_debounce
Revises: 0019_sequences
Create Date: 2026-12-05

Debounce (`enqueue(..., debounce="30s", debounce_key=K)`, queue_core/features/
debounce.py):

- "WorkerJob"."debounceKey" (text, NULL): the key of a job that later enqueues
  of the same type and key fold into while it waits. "debounceMoves" (integer,
  NULL): how many enqueues moved it (or replaced its payload) so far.
- "WorkerJob_debounce_key", UNIQUE (type, "debounceKey") over PENDING rows that
  have one: at most one pending job per type and key, whoever writes the rows.
  An enqueue is `INSERT ... ON CONFLICT (type, "debounceKey") WHERE ... DO
  UPDATE`: the index decides between concurrent enqueues, and the one row
  either is inserted or takes the update, never neither (a row that a claim
  holds makes the enqueue wait for the claim's commit; then it is no longer
  pending, and the enqueue inserts a new job). Rows that left PENDING are not in
  the index: a claimed or finished job keeps its key without blocking the next.
- `skiplock_debounce_requeued()`, BEFORE UPDATE OF status for a row that has a
  key and comes back to PENDING (a retry's backoff, a release at shutdown, a
  rescue, `retry-dead`): the key is cleared. A job that was claimed once is no
  longer a debounce target, so it cannot collide with the pending job a later
  enqueue made meanwhile, and it is not moved by later enqueues. A claimed,
  running or finished job keeps its key, for the record. The trigger's WHEN
  reads two columns: a claim or a completion pays that alone, never a call.

Priority aging (queue_core/features/aging.py, run by pool masters with
`--age-after`):

- "WorkerJob"."agedFrom" (integer, NULL): the priority a job had before aging
  first raised it; "agedAt" (timestamptz, NULL): when it last did. Both stay
  NULL for a job never aged.
- "WorkerJob_aged_idx" over the pending aged rows only: `skiplock stats` counts
  them without a scan.

Every new column is nullable: the original service's Prisma client reads and
writes "WorkerJob" as before.
"""

from __future__ import annotations

from alembic import op

revision = "0020_debounce"
down_revision = "0019_sequences"
branch_labels = None
depends_on = None

_DEBOUNCE_REQUEUED = """
    CREATE FUNCTION skiplock_debounce_requeued() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        -- Back to PENDING after it left it: an ordinary job now (a later enqueue of
        -- the key may have made the key's pending job meanwhile).
        NEW."debounceKey" := NULL;
        RETURN NEW;
    END $$
"""


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE "WorkerJob"
            ADD COLUMN "debounceKey"   text,
            ADD COLUMN "debounceMoves" integer,
            ADD COLUMN "agedFrom"      integer,
            ADD COLUMN "agedAt"        timestamptz
        """
    )
    op.execute(
        'CREATE UNIQUE INDEX "WorkerJob_debounce_key" ON "WorkerJob" (type, "debounceKey") '
        """WHERE status = 'PENDING' AND "debounceKey" IS NOT NULL"""
    )
    op.execute(
        'CREATE INDEX "WorkerJob_aged_idx" ON "WorkerJob" (type) '
        """WHERE status = 'PENDING' AND "agedFrom" IS NOT NULL"""
    )
    op.execute(_DEBOUNCE_REQUEUED)
    op.execute(
        'CREATE TRIGGER "WorkerJob_debounce_requeued" BEFORE UPDATE OF status ON "WorkerJob" '
        """FOR EACH ROW WHEN (NEW.status = 'PENDING' AND OLD.status <> 'PENDING'
                             AND OLD."debounceKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_debounce_requeued()"""
    )


def downgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_debounce_requeued" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_debounce_requeued()")
    op.execute('DROP INDEX "WorkerJob_aged_idx"')
    op.execute('DROP INDEX "WorkerJob_debounce_key"')
    op.execute(
        """
        ALTER TABLE "WorkerJob"
            DROP COLUMN "debounceKey", DROP COLUMN "debounceMoves",
            DROP COLUMN "agedFrom", DROP COLUMN "agedAt"
        """
    )
