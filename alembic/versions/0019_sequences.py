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
  counter (a row written running or ended keeps the one it was written with;
  without one it is in no line). "sequencePolicy" (text,
  NULL = 'hold'): what the job does to the rest of its key once it is
  dead-lettered: `hold` them until a person retries it (it then runs first
  again) or deletes it, or lets the key go on (`skiplock_sequence_advance`,
  which gives the dead letter the policy pass); `pass` lets the next one run.
  Per row, so that rows from other producers carry their own; a cancelled or
  deleted job never holds its key (a cancel is a person's decision about that
  job, not about the rest).
- A job is *in line* from its insert until it ends: PENDING (due or not,
  retrying after a failure, parked, waiting for a slot, its parents or its
  turn), PROCESSING, or DEAD_LETTER under the policy hold (the key is then
  *held*). The key's *head*, the one job that may run, is its job in line
  with the lowest number. No column records it: the first version kept it in
  the key's row, and the end of every head then locked that row and wrote it
  as well as the next job; now the end of a head writes the next job alone
  (docs/benchmarks.md, "Sequences").
- "WorkerSequence" (key, "lastNo", "updatedAt"): one row per key, its
  counter. The insert of a job bumps it (UPDATE, or INSERT ... ON CONFLICT DO
  UPDATE for a new key) and so locks it until that transaction ends: two
  transactions that enqueue into one key are ordered by that lock (enqueue
  order = the commit order of the enqueues of one key). `skiplock cleanup`
  forgets a key with no job in line, untouched for an hour (its numbers then
  start again at 1).
- A job that is not its key's head is PENDING with "heldBack" = false and
  "waitingFor" one more than its parents (0016): it waits for one more
  thing, its predecessor. Out of the claim's index like every other waiting
  row, ignored by the slot triggers (they let in `true` rows only) and by
  parking, and the dependency resolver, which sets "heldBack" NULL only when
  "waitingFor" reaches 0, never lets it in while it waits for its turn: a
  job can both depend on jobs and be in a sequence. No new "JobStatus".
- `skiplock_sequence_insert()`, BEFORE INSERT of a row with a key: numbers
  the job, and writes it waiting if a job of its key is in line. That last
  job in line is locked FOR SHARE: its end, which takes no lock of the key,
  either committed before (the lock skips it, and the new job comes after
  nobody) or waits for this transaction's end and then sees the new job
  behind it. BEFORE, so a waiting row is written once as it is; an insert
  that ON CONFLICT then skips leaves only a number unused.
- `skiplock_sequence_moved()`, AFTER UPDATE OF status of a row with a key
  to anything but PROCESSING (a claim does not call it), AFTER DELETE of a
  row with a key (short WHENs: other rows pay their evaluation alone), and
  AFTER TRUNCATE: a job left the line (completed, cancelled, deleted, or
  dead-lettered under `pass`). If no job of its key is in line before it, it
  was the head: the next job in line is locked, then let in, in the same
  transaction, claimable from that commit on. A claim, a retry with
  back-off, a crash's recovery, a snooze, a dead letter under hold: the job
  stays in line, and the rest wait. A job that had left the line and comes
  back (`skiplock retry` of a job that passed the key on) joins the back of
  it. Lock order: the ending job's row, then the next job's row. Whether a
  job is its key's head changes only by the end of the one before it, which
  locks the job's row to let it in: so an end that races with the end of
  the job before it (a cancel of a waiting job while its predecessor
  completes) either sees that end or is waited for and skipped.
- "WorkerJob_sequence_idx" ("sequenceKey", "sequenceNo") over the rows in
  line: the last job of a key, the next one, or one before a job, is one
  probe.
"""

from __future__ import annotations

from alembic import op

revision = "0019_sequences"
down_revision = "0018_rates"
branch_labels = None
depends_on = None

# A job is *in line* from its enqueue until it ends: PENDING (due or not, retrying,
# parked, waiting for a slot, its parents or its turn), PROCESSING, or
# dead-lettered under the policy hold. The head of a key is its job in line with the
# lowest number: no column says so, so that the end of a head writes nothing but the
# next job. "WorkerJob_sequence_idx" holds exactly these rows (its predicate is
# this text, with a NULL key), so each question below is one probe of it.
_LINE = """{a}"sequenceKey" = {k} AND {a}"sequenceNo" IS NOT NULL
           AND ({a}status IN ('PENDING', 'PROCESSING')
                OR ({a}status = 'DEAD_LETTER' AND {a}"sequencePolicy" IS DISTINCT FROM 'pass'))"""
_IN_LINE = _LINE.format(a="", k="k")

# The first job in line after number `n` of key k, which now comes first (its
# predecessor left the line), is let in: one thing less to wait for. Its row is
# locked first: a cancel of it that commits meanwhile is seen, and the one after it
# taken; an enqueue that holds it (it was the last in line) is waited for.
_LET_IN = f"""
        SELECT id INTO nid FROM "WorkerJob"
        WHERE {_IN_LINE} AND "sequenceNo" > n
        ORDER BY "sequenceNo" LIMIT 1
        FOR UPDATE;
        IF nid IS NOT NULL THEN
            -- One let in by hand already waits for nothing: left as it is.
            UPDATE "WorkerJob"
            SET "waitingFor" = "waitingFor" - 1,
                "heldBack" = CASE WHEN "waitingFor" > 1 THEN false END
            WHERE id = nid AND status = 'PENDING' AND "heldBack" = false AND "waitingFor" > 0
            RETURNING "heldBack" IS NULL INTO ready;
            IF ready THEN
                PERFORM pg_notify('skiplock_jobs', '');
            END IF;
        END IF;
"""

# A job joins the back of key k's line (its insert, or a comeback after it had left
# the line): the key's row numbers it, and is locked until this transaction ends, so
# that two enqueues of one key are numbered in the order they commit. The last job
# in line is locked FOR SHARE: an end of that job (which takes no lock of the key)
# either committed before, and it is skipped (the new job comes after nobody), or
# waits for this transaction and then sees the new job behind it. `me`: the job
# itself, already in the table on a comeback.
_JOIN = f"""
        UPDATE "WorkerSequence"
        SET "lastNo" = "lastNo" + 1, "updatedAt" = statement_timestamp()
        WHERE key = k
        RETURNING "lastNo" INTO n;
        IF NOT FOUND THEN
            INSERT INTO "WorkerSequence" AS s (key, "lastNo") VALUES (k, 1)
            ON CONFLICT (key) DO UPDATE
            SET "lastNo" = s."lastNo" + 1, "updatedAt" = statement_timestamp()
            RETURNING s."lastNo" INTO n;
        END IF;
        PERFORM FROM "WorkerJob"
        WHERE {_IN_LINE} AND id IS DISTINCT FROM me
        ORDER BY "sequenceNo" DESC LIMIT 1
        FOR SHARE;
        behind := FOUND;
"""

_ADVANCE = f"""
    CREATE FUNCTION skiplock_sequence_advance(k text) RETURNS text
    LANGUAGE plpgsql AS $$
    DECLARE
        h text;
        n bigint;
        nid text;
        ready boolean;
    BEGIN
        -- A person lets a key held by its dead-lettered head go on: the dead letter
        -- takes the policy pass (it leaves the line, and were it retried it would join
        -- the back), and the next job is let in.
        SELECT id, "sequenceNo" INTO h, n FROM "WorkerJob"
        WHERE {_IN_LINE}
        ORDER BY "sequenceNo" LIMIT 1
        FOR UPDATE;
        UPDATE "WorkerJob" SET "sequencePolicy" = 'pass'
        WHERE id = h AND status = 'DEAD_LETTER';
        IF NOT FOUND THEN
            RETURN NULL;  -- not held
        END IF;
{_LET_IN}
        RETURN nid;
    END $$
"""

_INSERT = f"""
    CREATE FUNCTION skiplock_sequence_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        k text := NEW."sequenceKey";
        me text;
        n bigint;
        behind boolean;
    BEGIN
        IF NEW.status <> 'PENDING' THEN
            -- Written running or ended (an import): its number, if it has one, is the
            -- writer's; without one it is in no line.
            RETURN NEW;
        END IF;
{_JOIN}
        NEW."sequenceNo" := n;
        IF behind THEN
            NEW."heldBack" := false;
            NEW."waitingFor" := COALESCE(NEW."waitingFor", 0) + 1;
        END IF;
        RETURN NEW;
    END $$
"""

_MOVED = f"""
    CREATE FUNCTION skiplock_sequence_moved() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        k text;
        me text;
        n bigint;
        nid text;
        ready boolean;
        behind boolean;
        was_in boolean;
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            DELETE FROM "WorkerSequence";  -- no job is left in any line
            RETURN NULL;
        END IF;
        k := OLD."sequenceKey";
        me := OLD.id;
        n := OLD."sequenceNo";
        was_in := OLD."sequenceNo" IS NOT NULL
                  AND (OLD.status IN ('PENDING', 'PROCESSING')
                       OR (OLD.status = 'DEAD_LETTER'
                           AND OLD."sequencePolicy" IS DISTINCT FROM 'pass'));
        IF TG_OP = 'UPDATE' THEN
            IF NEW."sequenceKey" IS DISTINCT FROM k THEN
                RETURN NULL;  -- moved by hand: not followed
            END IF;
            IF NEW.status IN ('PENDING', 'PROCESSING') OR (NEW.status = 'DEAD_LETTER'
                    AND NEW."sequencePolicy" IS DISTINCT FROM 'pass') THEN
                IF was_in THEN
                    RETURN NULL;  -- a retry, a recovery, a hold: the head stays the head
                END IF;
                -- A job that had left the line (passed it on, was cancelled, released)
                -- comes back: at the back of the line.
{_JOIN}
                UPDATE "WorkerJob"
                SET "sequenceNo" = n,
                    "heldBack" = CASE WHEN behind THEN false ELSE "heldBack" END,
                    "waitingFor" = CASE WHEN behind THEN COALESCE("waitingFor", 0) + 1
                                        ELSE "waitingFor" END
                WHERE id = me;
                RETURN NULL;
            END IF;
        END IF;
        IF NOT was_in THEN
            RETURN NULL;
        END IF;
        -- It left the line. It was its key's head if no job of its key is in line
        -- before it (even a claimed one: a person may let a waiting job run out of
        -- order). Whether it is changes only by the end of the one before it, which
        -- locks this row to let it in: that one has committed, or it waits for this
        -- transaction and then skips this row.
        PERFORM FROM "WorkerJob" WHERE {_IN_LINE} AND "sequenceNo" < n LIMIT 1;
        IF FOUND THEN
            RETURN NULL;  -- a job that waited for its turn left the line
        END IF;
{_LET_IN}
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
            "updatedAt" timestamptz NOT NULL DEFAULT statement_timestamp()
        )
        """
    )
    op.execute(
        'CREATE INDEX "WorkerJob_sequence_idx" ON "WorkerJob" ("sequenceKey", "sequenceNo") '
        "WHERE " + _LINE.format(a="", k="k").replace('"sequenceKey" = k', '"sequenceKey" IS NOT NULL')
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
             AND "waitingFor" > 0 AND EXISTS (
                 SELECT FROM "WorkerJob" AS h
                 WHERE """ + _LINE.format(a="h.", k='"WorkerJob"."sequenceKey"') + """
                   AND h."sequenceNo" < "WorkerJob"."sequenceNo")"""
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
