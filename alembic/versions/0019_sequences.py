"""Sequences: the jobs of one key run one at a time, in the order they were enqueued.

Revision ID: 0019_sequences
Revises: 0018_rates
Create Date: 2026-12-05

`enqueue(..., sequence="account:7")`, `@handler(T, sequence_key=FIELD)`, or
any producer that writes "sequenceKey" on its row (psql, Prisma): everything
happens in the table's triggers, so every producer is sequenced alike
(queue_core/features/sequences.py).

- "WorkerJob"."sequenceKey" (text): the job's sequence, or NULL.
  "sequenceNo" (bigint): its place in the line, given at insert from the key's
  counter. "sequencePolicy" (text, NULL = 'hold'): what the job does to the
  rest of its key once it is dead-lettered: `hold` them until a person
  retries it (it then runs first again) or deletes it, or lets the key go on
  (`skiplock_sequence_advance` by hand); `pass` lets the next one run. Per
  row, so that rows from other producers carry their own; a cancelled or
  deleted job never holds its key (a cancel is a person's decision about that
  job, not about the rest).
- "WorkerSequence" (key, "lastNo", head, "updatedAt"): one row per key.
  `head` is the one job of the key that may run (NULL: none is in line): PENDING
  (due or not, retrying after a failure, parked, waiting for a slot or for
  its parents), PROCESSING, or DEAD_LETTER under the policy hold (the key is
  *held*). `skiplock cleanup` forgets a key idle for an hour (its numbers then
  start again at 1, with no job of the key in line). The insert of a job locks it (INSERT ... ON CONFLICT DO
  UPDATE) until that transaction ends, so two transactions that enqueue into
  one key are ordered by that lock: the one that took it first comes first,
  and the other waits for its commit (enqueue order = the commit order of
  the enqueues of one key).
- A job that is not its key's head is PENDING with "heldBack" = false and
  "waitingFor" one more than its parents (0016): it waits for one more
  thing, its predecessor. Out of the claim's index like every other waiting
  row, ignored by the slot triggers (they let in `true` rows only) and by
  parking, and the dependency resolver, which sets "heldBack" NULL only when
  "waitingFor" reaches 0, never lets it in while it waits for its turn: a
  job can both depend on jobs and be in a sequence. No new "JobStatus".
- `skiplock_sequence_insert()`, BEFORE INSERT of a row with a key: numbers
  the job and makes it the head if the key is free, else waiting. BEFORE,
  so a waiting row is written once as it is; an insert that ON CONFLICT then
  skips may leave a head that was never written, which the next insert of
  the key sees (no such job) and replaces.
- `skiplock_sequence_moved()`, AFTER UPDATE OF status of a row with a key
  to anything but PROCESSING (a claim does not call it), AFTER DELETE of a
  row with a key (short WHENs: other rows pay their evaluation alone), and
  AFTER TRUNCATE: the head ended (completed, cancelled, deleted, or
  dead-lettered under `pass`): the next job, lowest "sequenceNo", becomes
  the head in the same transaction (`skiplock_sequence_advance`), claimable
  from that commit on. A claim, a retry with back-off, a crash's recovery, a
  snooze: the head stays the head, and the rest wait. A job that had ended
  and comes back (`skiplock retry` of a job that passed the key on) joins
  the back of its line. Lock order: the ending job's row, then its key's
  row, then the next job's row; a non-head job's end takes no key lock.
- "WorkerJob_sequence_idx" ("sequenceKey", "sequenceNo") over PENDING rows
  with a key: the next job of a key is one probe.
"""

from __future__ import annotations

from alembic import op

revision = "0019_sequences"
down_revision = "0018_rates"
branch_labels = None
depends_on = None

# The key's next job becomes its head: the caller holds the key's row (the head's
# end, or a person's release), so no enqueue of the key slips in meanwhile; the
# next job's row is locked (a cancel of it that commits first is seen, and the one
# after it taken). NULL: nothing is left in line, the key is free; its row stays,
# and its counter goes on (cleanup forgets keys idle for an hour). Inlined in the
# trigger: a call of the function costs as much as its statements.
_NEXT = """
        UPDATE "WorkerSequence"
        SET head = (SELECT id FROM "WorkerJob"
                    WHERE "sequenceKey" = k AND status = 'PENDING'
                    ORDER BY "sequenceNo" LIMIT 1
                    FOR UPDATE),
            "updatedAt" = statement_timestamp()
        WHERE key = k
        RETURNING head INTO nid;
        IF nid IS NOT NULL THEN
            -- Its turn: one thing less to wait for (one let in by hand waits for none).
            UPDATE "WorkerJob"
            SET "waitingFor" = "waitingFor" - 1,
                "heldBack" = CASE WHEN "waitingFor" > 1 THEN false END
            WHERE id = nid AND "heldBack" = false AND "waitingFor" > 0
            RETURNING "heldBack" IS NULL INTO ready;
            IF ready THEN
                PERFORM pg_notify('skiplock_jobs', '');
            END IF;
        END IF;
"""

_ADVANCE = f"""
    CREATE FUNCTION skiplock_sequence_advance(k text) RETURNS text
    LANGUAGE plpgsql AS $$
    DECLARE
        nid text;
        ready boolean;
    BEGIN
        PERFORM FROM "WorkerSequence" WHERE key = k FOR UPDATE;
{_NEXT}
        RETURN nid;
    END $$
"""

_INSERT = """
    CREATE FUNCTION skiplock_sequence_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        n bigint;
        h text;
        h_status text;
    BEGIN
        IF NEW.status <> 'PENDING' THEN
            RETURN NEW;  -- written already ended: not in line
        END IF;
        -- A key in use has its row: a plain UPDATE, cheaper than a speculative insert.
        UPDATE "WorkerSequence"
        SET "lastNo" = "lastNo" + 1, head = COALESCE(head, NEW.id),
            "updatedAt" = statement_timestamp()
        WHERE key = NEW."sequenceKey"
        RETURNING "lastNo", head INTO n, h;
        IF NOT FOUND THEN
            INSERT INTO "WorkerSequence" AS s (key, "lastNo", head)
            VALUES (NEW."sequenceKey", 1, NEW.id)
            ON CONFLICT (key) DO UPDATE
            SET "lastNo" = s."lastNo" + 1, head = COALESCE(s.head, EXCLUDED.head),
                "updatedAt" = statement_timestamp()
            RETURNING s."lastNo", s.head INTO n, h;
        END IF;
        NEW."sequenceNo" := n;
        IF h = NEW.id THEN
            RETURN NEW;  -- the key was free: this one may run
        END IF;
        SELECT status INTO h_status FROM "WorkerJob" WHERE id = h;
        IF h_status IS NULL OR h_status IN ('COMPLETED', 'FAILED') THEN
            -- The head was never written (its insert was skipped ON CONFLICT) or
            -- ended behind the triggers' back: nothing runs before this one.
            UPDATE "WorkerSequence" SET head = NEW.id WHERE key = NEW."sequenceKey";
            RETURN NEW;
        END IF;
        NEW."heldBack" := false;
        NEW."waitingFor" := COALESCE(NEW."waitingFor", 0) + 1;
        RETURN NEW;
    END $$
"""

_MOVED = f"""
    CREATE FUNCTION skiplock_sequence_moved() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        k text;
        h text;
        n bigint;
        nid text;
        ready boolean;
        locked boolean := false;
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            DELETE FROM "WorkerSequence";  -- no job is left in any line
            RETURN NULL;
        END IF;
        k := OLD."sequenceKey";
        IF TG_OP = 'UPDATE' THEN
            IF NEW.status = OLD.status OR NEW."sequenceKey" IS DISTINCT FROM k
               OR (OLD.status IN ('PENDING', 'PROCESSING')
                   AND NEW.status IN ('PENDING', 'PROCESSING')) THEN
                RETURN NULL;  -- a claim, a retry, a recovery: the head stays the head
            END IF;
        END IF;
        IF TG_OP = 'UPDATE' AND OLD.status = 'PROCESSING' AND NEW.status <> 'PENDING' THEN
            -- A run's end: a claimed job is its key's head, whose row is locked now.
            SELECT head INTO h FROM "WorkerSequence" WHERE key = k FOR UPDATE;
            locked := true;
        ELSE
            -- Unlocked: this row may be a job that waits for its turn, which the end of
            -- its key's head may be locking, under the key's row, right now. Whether
            -- this row is the head changes only by the end of the head, which this
            -- transaction holds the row of.
            SELECT head INTO h FROM "WorkerSequence" WHERE key = k;
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.status IN ('PENDING', 'PROCESSING') THEN
            IF h = OLD.id THEN
                RETURN NULL;  -- the held head retried: it runs first
            END IF;
            -- A job that had passed its key on, retried: at the back of the line.
            INSERT INTO "WorkerSequence" AS s (key, "lastNo", head)
            VALUES (k, 1, OLD.id)
            ON CONFLICT (key) DO UPDATE
            SET "lastNo" = s."lastNo" + 1, head = COALESCE(s.head, EXCLUDED.head),
                "updatedAt" = statement_timestamp()
            RETURNING s."lastNo", s.head INTO n, h;
            UPDATE "WorkerJob"
            SET "sequenceNo" = n,
                "heldBack" = CASE WHEN h = id THEN "heldBack" ELSE false END,
                "waitingFor" = CASE WHEN h = id THEN "waitingFor"
                                    ELSE COALESCE("waitingFor", 0) + 1 END
            WHERE id = OLD.id;
            RETURN NULL;
        END IF;
        IF h IS DISTINCT FROM OLD.id THEN
            RETURN NULL;  -- a job that waited for its turn left the line
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.status = 'DEAD_LETTER'
           AND COALESCE(NEW."sequencePolicy", 'hold') = 'hold' THEN
            RETURN NULL;  -- held: the rest wait for a person
        END IF;
        IF NOT locked THEN
            PERFORM FROM "WorkerSequence" WHERE key = k FOR UPDATE;
        END IF;
{_NEXT}
        RETURN NULL;
    END $$
"""


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE "WorkerJob"
            ADD COLUMN "sequenceKey"    text,
            ADD COLUMN "sequenceNo"     bigint,
            ADD COLUMN "sequencePolicy" text CHECK ("sequencePolicy" IN ('hold', 'pass'))
        """
    )
    op.execute(
        """
        CREATE TABLE "WorkerSequence" (
            key         text        PRIMARY KEY,
            "lastNo"    bigint      NOT NULL,
            head        text,
            "updatedAt" timestamptz NOT NULL DEFAULT statement_timestamp()
        )
        """
    )
    op.execute(
        'CREATE INDEX "WorkerJob_sequence_idx" ON "WorkerJob" ("sequenceKey", "sequenceNo") '
        """WHERE status = 'PENDING' AND "sequenceKey" IS NOT NULL"""
    )
    op.execute(_ADVANCE)
    op.execute(_INSERT)
    op.execute(_MOVED)
    op.execute(
        'CREATE TRIGGER "WorkerJob_sequence_insert" BEFORE INSERT ON "WorkerJob" FOR EACH ROW '
        """WHEN (NEW."sequenceKey" IS NOT NULL) EXECUTE FUNCTION skiplock_sequence_insert()"""
    )
    # A claim (to PROCESSING) never matters to the line: it does not call the function.
    op.execute(
        'CREATE TRIGGER "WorkerJob_sequence_moved" AFTER UPDATE OF status ON "WorkerJob" '
        """FOR EACH ROW WHEN (OLD."sequenceKey" IS NOT NULL AND NEW.status <> 'PROCESSING') """
        "EXECUTE FUNCTION skiplock_sequence_moved()"
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_sequence_deleted" AFTER DELETE ON "WorkerJob" FOR EACH ROW '
        'WHEN (OLD."sequenceKey" IS NOT NULL) EXECUTE FUNCTION skiplock_sequence_moved()'
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_sequence_truncated" AFTER TRUNCATE ON "WorkerJob" '
        "FOR EACH STATEMENT EXECUTE FUNCTION skiplock_sequence_moved()"
    )


def downgrade() -> None:
    # An older skiplock knows no sequences: what waits only for its turn runs.
    op.execute(
        """UPDATE "WorkerJob" SET "waitingFor" = "waitingFor" - 1,
                  "heldBack" = CASE WHEN "waitingFor" > 1 THEN false END
           WHERE status = 'PENDING' AND "sequenceKey" IS NOT NULL AND "heldBack" = false
             AND "waitingFor" > 0
             AND id NOT IN (SELECT head FROM "WorkerSequence" WHERE head IS NOT NULL)"""
    )
    op.execute('DROP TRIGGER "WorkerJob_sequence_truncated" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_sequence_deleted" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_sequence_moved" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_sequence_insert" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_sequence_moved()")
    op.execute("DROP FUNCTION skiplock_sequence_insert()")
    op.execute("DROP FUNCTION skiplock_sequence_advance(text)")
    op.execute('DROP INDEX "WorkerJob_sequence_idx"')
    op.execute('DROP TABLE "WorkerSequence"')
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN "sequenceKey", DROP COLUMN "sequenceNo", '
               'DROP COLUMN "sequencePolicy"')
