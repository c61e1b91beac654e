"""Cancel, concurrency limits per key, unique windows, snooze, progress, waiting on a job.

Revision ID: 0005_features
Revises: 0007_accounting (main's head when this branch last merged it; written against 0004_prisma_types)

Every change to "WorkerJob" is a new nullable column, so a Prisma client
generated from the original schema keeps reading and writing the table; no
value is added to "JobStatus" (a cancelled job ends FAILED, which the Prisma
schema declares and the original service never writes).

- "cancelRequestedAt", "cancelledBy": a cancel asked of a running job. The
  master that runs it reads the request in its heartbeat's answer, stops the
  child and ends the job FAILED (queue_core/features/cancel.py). The index of finished
  rows (cleanup) now covers FAILED too.
- "concurrencyKey", "concurrencyLimit", "heldBack": at most `limit` jobs of
  one key hold a *slot* at once. A job holds one while it is PENDING outside
  the held-back set, or PROCESSING; the others wait with "heldBack" = true,
  outside the claim's partial index. So the claim never walks over a key's
  backlog: a user's 100,000-job backfill puts only `limit` rows in the claim
  index, and another user's job is next in line (queue_core/features/limits.py).
  Slots are counted in "WorkerConcurrencyKey" and moved by triggers, which
  run inside whatever statement inserts, ends, retries or deletes the job:
  the claim, completion, failure, recovery, cancel and cleanup keep their
  SQL, and no path can leak a slot. Keyed jobs are inserted held back; an
  AFTER INSERT trigger takes the slot only for rows that were really
  inserted (a BEFORE trigger would take one for a row that ON CONFLICT then
  drops).
- "uniqueKey", "uniqueUntil": an idempotency key with a window (only while
  the job is active, or for a period). A partial unique index decides, as for
  "idempotencyKey"; a key whose window is over is freed by the next enqueue
  of that key (queue_core/features/unique.py).
- "progress", "progressMessage": what a handler reported, written by the
  master's heartbeat.
- "snoozes": how many times a handler asked to run again later.
- "notifyDone": someone waits on this job; its end NOTIFYs `skiplock_done`.
  Only then: a NOTIFY serialises the commits of every transaction that sends
  one, which every completion would otherwise pay.
"""

from __future__ import annotations

from alembic import op

revision = "0005_features"
down_revision = "0007_accounting"
branch_labels = None
depends_on = None

_ACTIVE = "('PENDING', 'PROCESSING')"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE "WorkerJob"
            ADD COLUMN "cancelRequestedAt" timestamptz,
            ADD COLUMN "cancelledBy"       text,
            ADD COLUMN "concurrencyKey"    text,
            ADD COLUMN "concurrencyLimit"  integer CHECK ("concurrencyLimit" >= 1),
            ADD COLUMN "heldBack"          boolean,
            ADD COLUMN "uniqueKey"         text,
            ADD COLUMN "uniqueUntil"       timestamptz,
            ADD COLUMN progress            real,
            ADD COLUMN "progressMessage"   text,
            ADD COLUMN snoozes             integer,
            ADD COLUMN "notifyDone"        boolean
        """
    )
    # The claim's index leaves held-back rows out (see the docstring).
    op.execute('DROP INDEX "WorkerJob_claim_idx"')
    op.execute(
        'CREATE INDEX "WorkerJob_claim_idx" ON "WorkerJob" (priority DESC, "availableAt" ASC) '
        """WHERE status = 'PENDING' AND "heldBack" IS NULL"""
    )
    # Cleanup deletes cancelled jobs (FAILED) too: its index covers them.
    op.execute('DROP INDEX "WorkerJob_finished_idx"')
    op.execute(
        'CREATE INDEX "WorkerJob_finished_idx" ON "WorkerJob" (status, "completedAt") '
        "WHERE status IN ('COMPLETED', 'DEAD_LETTER', 'FAILED')"
    )
    # The next held-back job of a key, and the count `skiplock stats` shows.
    op.execute(
        'CREATE INDEX "WorkerJob_heldBack_idx" ON "WorkerJob" '
        '("concurrencyKey", priority DESC, "availableAt" ASC) '
        """WHERE status = 'PENDING' AND "heldBack" """
    )
    op.execute(
        'CREATE UNIQUE INDEX "WorkerJob_uniqueKey_key" ON "WorkerJob" ("uniqueKey") '
        'WHERE "uniqueKey" IS NOT NULL'
    )
    op.execute(
        """
        CREATE TABLE "WorkerConcurrencyKey" (
            key         text        PRIMARY KEY,
            active      integer     NOT NULL DEFAULT 0,
            "limit"     integer     NOT NULL CHECK ("limit" >= 1),
            "updatedAt" timestamptz NOT NULL DEFAULT now()
        ) WITH (fillfactor = 50)
        """
    )
    # Give free slots of key `k` to its held-back jobs, best first. The key's row
    # is locked first: every change of a key's slots goes through that lock, so
    # an insert and an end of the same key never miss each other's rows (each
    # statement of a plpgsql function sees what committed before it began).
    op.execute(
        """
        CREATE FUNCTION skiplock_fill_slots(k text) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE
            used integer;
            cap integer;
            next_id text;
        BEGIN
            SELECT active, "limit" INTO used, cap FROM "WorkerConcurrencyKey"
            WHERE key = k FOR UPDATE;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            WHILE used < cap LOOP
                SELECT id INTO next_id FROM "WorkerJob"
                WHERE "concurrencyKey" = k AND status = 'PENDING' AND "heldBack"
                ORDER BY priority DESC, "availableAt" ASC
                LIMIT 1 FOR UPDATE;
                EXIT WHEN NOT FOUND;
                UPDATE "WorkerJob" SET "heldBack" = NULL WHERE id = next_id;
                used := used + 1;
            END LOOP;
            UPDATE "WorkerConcurrencyKey" SET active = used, "updatedAt" = now()
            WHERE key = k AND active IS DISTINCT FROM used;
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION skiplock_key_inserted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO "WorkerConcurrencyKey" AS c (key, "limit")
            VALUES (NEW."concurrencyKey", COALESCE(NEW."concurrencyLimit", 1))
            ON CONFLICT (key) DO UPDATE SET "limit" = EXCLUDED."limit"
            WHERE c."limit" IS DISTINCT FROM EXCLUDED."limit";
            PERFORM skiplock_fill_slots(NEW."concurrencyKey");
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_key_inserted" AFTER INSERT ON "WorkerJob" FOR EACH ROW '
        """WHEN (NEW."concurrencyKey" IS NOT NULL AND NEW."heldBack")
        EXECUTE FUNCTION skiplock_key_inserted()"""
    )
    # A status change of a keyed job. Coming back to PENDING (a dead letter retried)
    # takes a slot or waits held back: a BEFORE trigger, which sets "heldBack" on
    # the row being written. Leaving PENDING/PROCESSING frees the slot and lets the
    # key's next job in: an AFTER trigger, which runs once the statement has
    # written all its rows, so a statement that ends many jobs of one key (a
    # cancel of a user's backlog) never lets in a job it is about to end itself
    # (PostgreSQL refuses a row that a BEFORE trigger's side effect already
    # changed). PROCESSING -> PENDING (a retry, a release, a rescue, a snooze)
    # keeps the slot.
    op.execute(
        """
        CREATE FUNCTION skiplock_key_take() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            used integer;
            cap integer;
        BEGIN
            INSERT INTO "WorkerConcurrencyKey" (key, "limit")
            VALUES (NEW."concurrencyKey", COALESCE(NEW."concurrencyLimit", 1))
            ON CONFLICT (key) DO NOTHING;
            SELECT active, "limit" INTO used, cap FROM "WorkerConcurrencyKey"
            WHERE key = NEW."concurrencyKey" FOR UPDATE;
            -- A row that another client moved straight to PROCESSING runs anyway:
            -- count it, so that the key's other jobs wait for it.
            IF used < cap OR NEW.status = 'PROCESSING' THEN
                UPDATE "WorkerConcurrencyKey" SET active = active + 1, "updatedAt" = now()
                WHERE key = NEW."concurrencyKey";
                NEW."heldBack" := NULL;
            ELSE
                NEW."heldBack" := true;
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_key_take" BEFORE UPDATE OF status ON "WorkerJob" '
        f"""FOR EACH ROW WHEN (NEW."concurrencyKey" IS NOT NULL
                              AND OLD.status IS DISTINCT FROM NEW.status
                              AND NEW.status IN {_ACTIVE}
                              AND NOT (OLD.status IN {_ACTIVE} AND OLD."heldBack" IS NULL))
        EXECUTE FUNCTION skiplock_key_take()"""
    )
    op.execute(
        """
        -- A job that held a slot left the active states, or was deleted: free the slot.
        CREATE FUNCTION skiplock_key_release() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE "WorkerConcurrencyKey" SET active = greatest(active - 1, 0), "updatedAt" = now()
            WHERE key = OLD."concurrencyKey";
            PERFORM skiplock_fill_slots(OLD."concurrencyKey");
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_key_release" AFTER UPDATE OF status ON "WorkerJob" '
        f"""FOR EACH ROW WHEN (OLD."concurrencyKey" IS NOT NULL
                              AND OLD.status IN {_ACTIVE} AND OLD."heldBack" IS NULL
                              AND NEW.status NOT IN {_ACTIVE})
        EXECUTE FUNCTION skiplock_key_release()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_key_deleted" AFTER DELETE ON "WorkerJob" FOR EACH ROW '
        f"""WHEN (OLD."concurrencyKey" IS NOT NULL AND OLD.status IN {_ACTIVE}
                 AND OLD."heldBack" IS NULL)
        EXECUTE FUNCTION skiplock_key_release()"""
    )
    op.execute(
        """
        CREATE FUNCTION skiplock_notify_done() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('skiplock_done', NEW.id);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_notify_done" AFTER UPDATE OF status ON "WorkerJob" '
        """FOR EACH ROW WHEN (NEW."notifyDone" AND OLD.status IS DISTINCT FROM NEW.status
                              AND NEW.status IN ('COMPLETED', 'FAILED', 'DEAD_LETTER'))
        EXECUTE FUNCTION skiplock_notify_done()"""
    )


def downgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_notify_done" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_key_deleted" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_key_release" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_key_take" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_key_inserted" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_notify_done()")
    op.execute("DROP FUNCTION skiplock_key_release()")
    op.execute("DROP FUNCTION skiplock_key_take()")
    op.execute("DROP FUNCTION skiplock_key_inserted()")
    op.execute("DROP FUNCTION skiplock_fill_slots(text)")
    op.execute('DROP TABLE "WorkerConcurrencyKey"')
    op.execute('DROP INDEX "WorkerJob_uniqueKey_key"')
    op.execute('DROP INDEX "WorkerJob_heldBack_idx"')
    op.execute('DROP INDEX "WorkerJob_claim_idx"')
    op.execute(
        'CREATE INDEX "WorkerJob_claim_idx" ON "WorkerJob" (priority DESC, "availableAt" ASC) '
        "WHERE status = 'PENDING'"
    )
    op.execute('DROP INDEX "WorkerJob_finished_idx"')
    op.execute(
        'CREATE INDEX "WorkerJob_finished_idx" ON "WorkerJob" (status, "completedAt") '
        "WHERE status IN ('COMPLETED', 'DEAD_LETTER')"
    )
    op.execute(
        """
        ALTER TABLE "WorkerJob"
            DROP COLUMN "cancelRequestedAt", DROP COLUMN "cancelledBy",
            DROP COLUMN "concurrencyKey", DROP COLUMN "concurrencyLimit",
            DROP COLUMN "heldBack", DROP COLUMN "uniqueKey", DROP COLUMN "uniqueUntil",
            DROP COLUMN progress, DROP COLUMN "progressMessage", DROP COLUMN snoozes,
            DROP COLUMN "notifyDone"
        """
    )
