"""Concurrency slots that cannot leak, and that a job which is not due does not hold.

Revision ID: 0013_slot_counts
Revises: 0012_routing
Create Date: 2026-12-05

The triggers of 0005_features moved a key's slots on a change of `status`
only. Every other change that makes a job hold a slot or stop holding one
left "WorkerConcurrencyKey".active wrong for good: an UPDATE of
"concurrencyKey" or "heldBack" (a script, an operator letting a job in by
hand), a row inserted with "heldBack" NULL by another producer, and a
`TRUNCATE "WorkerJob"`, which fires no row trigger at all (the key kept its
slots taken, and its next jobs waited held back forever). And a delayed job
took a free slot of its key at its enqueue, so a job of the same key that
was ready waited until the delayed one had run: an hour, for a job delayed
by an hour.

A job *holds* a slot of its key while it is PENDING and not held back, or
PROCESSING (a held-back row that another client claimed runs anyway, and
counts); the count of such jobs per key is "active". Now:

- One row trigger function, `skiplock_slots_changed()`, fires AFTER INSERT,
  DELETE and UPDATE OF status, "heldBack", "concurrencyKey", "availableAt"
  of keyed rows. It returns at once for an update that changes nothing of
  the key's slots (a claim, PENDING to PROCESSING, or a release); otherwise
  it compares whether the old row held a slot, of which key, with the new
  one, moves the counts of both keys, and balances each with
  `skiplock_fill_slots(key)`. The test is in the function, not in the
  trigger's WHEN: the server parses a WHEN again for every statement that
  updates those columns, keyed or not, and the long one cost every
  single-row claim and completion about 8 us; with this short WHEN they
  cost about 10 us less than under 0005's three triggers. AFTER, as
  before: a statement that ends many jobs of a key never lets in a job it
  is about to end (PostgreSQL refuses a row that a trigger's side effect
  already changed in the same statement).
- `skiplock_fill_slots(key)` balances a key under the lock of its row:
  over its limit (a job let in by hand, a limit lowered by the latest
  enqueue), it holds back pending holders, the one due last first; with
  free slots, it lets in held-back jobs, the best first; full, it lets a
  held-back job that is due before a pending holder which is not due yet
  take that holder's slot. The best held-back job is the first due one in
  the claim's order (priority, then age), or, when none is due, the one due
  first. So whatever the order of enqueues, retries and snoozes, a job that
  is not due holds a slot only while no job of its key that would be due
  before it waits for one, and the claim stays what it was: it never looks
  at keys, it only finds the holders in its index. Why not hold every job
  that is not due back: nothing would let it in when it comes due but a
  timer, and a key whose slots are free would keep its delayed job waiting.
  Its own changes of "heldBack" it counts itself: it marks them with the
  transaction-local setting `skiplock.filling`, and the row function
  ignores a change of "heldBack" alone made under that mark
  (pg_trigger_depth() would also skip what other triggers change, such as
  the deletes of a foreign key's ON DELETE CASCADE, which must be counted).
- "WorkerJob_key_due_idx" (key, "heldBack", "availableAt") over PENDING
  keyed rows: the held-back job due first and the pending holder due last
  of a key, each one probe. Unkeyed rows are not in it.
- `skiplock_slots_truncated()`, AFTER TRUNCATE FOR EACH STATEMENT: no job is
  left, so no key holds a slot; the keys are forgotten.
- `skiplock_recount_slots()` repairs what bypassed the triggers anyway
  (triggers disabled, `session_replication_role = replica`, a hand-edited
  "WorkerConcurrencyKey"): it finds in one read the keys whose count is
  wrong, whose jobs have no row, or whose held-back jobs could be let in,
  recounts each under its lock and balances it; it returns how many counts
  it corrected. `skiplock cleanup` runs it, and `skiplock recount-slots`
  alone. This migration runs it once, which also applies the rule above to
  the jobs already queued.

"WorkerJob" gets no column: the original schema's Prisma client reads and
writes it as before. The functions `skiplock_key_inserted()`, `skiplock_key_take()`,
`skiplock_key_release()` and their triggers are replaced; the downgrade puts
them back (the counts mean the same under both, so they stay right).
"""

from __future__ import annotations

from alembic import op

revision = "0013_slot_counts"
down_revision = "0012_routing"
branch_labels = None
depends_on = None

_ACTIVE = "('PENDING', 'PROCESSING')"
# Whether a row holds a slot of its key. A running job holds one even if it is
# marked held back: another client claimed it so, and it runs anyway.
_HOLDS = """({row}.status = 'PROCESSING' OR ({row}.status = 'PENDING' AND {row}."heldBack" IS NULL))"""

_FILL_SLOTS = """
    CREATE OR REPLACE FUNCTION skiplock_fill_slots(k text) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        used integer;
        cap integer;
        changed boolean := false;
        hold_id text;
        hold_at timestamptz;
        next_id text;
        next_at timestamptz;
    BEGIN
        SELECT active, "limit" INTO used, cap FROM "WorkerConcurrencyKey"
        WHERE key = k FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        -- The changes of "heldBack" below are counted here: the row trigger skips them.
        PERFORM set_config('skiplock.filling', 'on', true);
        -- Over the limit: hold back pending holders, the one due last first. A row
        -- that a claim is taking right now is skipped: it runs, and counts.
        WHILE used > cap LOOP
            SELECT id INTO hold_id FROM "WorkerJob"
            WHERE "concurrencyKey" = k AND status = 'PENDING' AND "heldBack" IS NULL
            ORDER BY "availableAt" DESC
            LIMIT 1 FOR UPDATE SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            UPDATE "WorkerJob" SET "heldBack" = true WHERE id = hold_id;
            used := used - 1;
            changed := true;
        END LOOP;
        LOOP
            hold_id := NULL;
            IF used >= cap THEN
                -- Full: only a pending holder that is not due yet may give way.
                SELECT id, "availableAt" INTO hold_id, hold_at FROM "WorkerJob"
                WHERE "concurrencyKey" = k AND status = 'PENDING' AND "heldBack" IS NULL
                  AND "availableAt" > statement_timestamp()
                ORDER BY "availableAt" DESC
                LIMIT 1 FOR UPDATE SKIP LOCKED;
                EXIT WHEN NOT FOUND;
            END IF;
            -- The best held-back job: the first due one in the claim's order, else
            -- the one due first.
            SELECT "availableAt" INTO next_at FROM "WorkerJob"
            WHERE "concurrencyKey" = k AND status = 'PENDING' AND "heldBack"
            ORDER BY "availableAt" LIMIT 1;
            EXIT WHEN NOT FOUND;
            IF next_at <= statement_timestamp() THEN
                SELECT id, "availableAt" INTO next_id, next_at FROM "WorkerJob"
                WHERE "concurrencyKey" = k AND status = 'PENDING' AND "heldBack"
                  AND "availableAt" <= statement_timestamp()
                ORDER BY priority DESC, "availableAt" ASC
                LIMIT 1 FOR UPDATE;
            ELSE
                SELECT id, "availableAt" INTO next_id, next_at FROM "WorkerJob"
                WHERE "concurrencyKey" = k AND status = 'PENDING' AND "heldBack"
                ORDER BY "availableAt" ASC, priority DESC
                LIMIT 1 FOR UPDATE;
            END IF;
            EXIT WHEN NOT FOUND;
            IF hold_id IS NULL THEN
                used := used + 1;
            ELSE
                EXIT WHEN next_at >= hold_at;
                UPDATE "WorkerJob" SET "heldBack" = true WHERE id = hold_id;
            END IF;
            UPDATE "WorkerJob" SET "heldBack" = NULL WHERE id = next_id;
            changed := true;
        END LOOP;
        PERFORM set_config('skiplock.filling', '', true);
        IF changed THEN
            UPDATE "WorkerConcurrencyKey" SET active = used, "updatedAt" = now()
            WHERE key = k;
        END IF;
    END $$
"""

_SLOTS_CHANGED = f"""
    CREATE FUNCTION skiplock_slots_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        old_key text;
        new_key text;
        old_holds boolean := false;
        new_holds boolean := false;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            old_key := OLD."concurrencyKey";
            old_holds := old_key IS NOT NULL AND {_HOLDS.format(row="OLD")};
        END IF;
        IF TG_OP <> 'DELETE' THEN
            new_key := NEW."concurrencyKey";
            new_holds := new_key IS NOT NULL AND {_HOLDS.format(row="NEW")};
        END IF;
        -- An update that matters to the key's slots: one that changes whether the row
        -- holds a slot (but not skiplock_fill_slots' own change of "heldBack" alone: it
        -- counts those itself), a holder now due later (a retry's backoff, a snooze: a
        -- job of its key that is due sooner may take its slot), or a job that waits,
        -- newly or due sooner (run now). A claim and a release are none of them.
        IF TG_OP = 'UPDATE' AND old_key = new_key THEN
            IF old_holds <> new_holds THEN
                IF OLD.status = NEW.status
                   AND current_setting('skiplock.filling', true) = 'on' THEN
                    RETURN NULL;
                END IF;
            ELSIF NOT (NEW.status = 'PENDING' AND CASE
                    WHEN NEW."heldBack" IS NULL
                    THEN NEW."availableAt" > statement_timestamp()
                         AND (OLD.status <> 'PENDING' OR NEW."availableAt" > OLD."availableAt")
                    ELSE OLD.status <> 'PENDING' OR NEW."availableAt" < OLD."availableAt"
                    END) THEN
                RETURN NULL;
            END IF;
        END IF;
        IF new_key IS NOT NULL AND TG_OP = 'INSERT' THEN
            -- A key's limit is its latest enqueue's.
            INSERT INTO "WorkerConcurrencyKey" AS c (key, "limit")
            VALUES (new_key, COALESCE(NEW."concurrencyLimit", 1))
            ON CONFLICT (key) DO UPDATE SET "limit" = EXCLUDED."limit"
            WHERE c."limit" IS DISTINCT FROM EXCLUDED."limit";
        ELSIF new_key IS NOT NULL THEN
            -- A job moved to a key, or one whose key was forgotten; no speculative
            -- insertion when the row is there, which it almost always is.
            INSERT INTO "WorkerConcurrencyKey" (key, "limit")
            SELECT new_key, COALESCE(NEW."concurrencyLimit", 1)
            WHERE NOT EXISTS (SELECT FROM "WorkerConcurrencyKey" WHERE key = new_key)
            ON CONFLICT (key) DO NOTHING;
        END IF;
        IF old_holds AND NOT (new_holds AND new_key = old_key) THEN
            UPDATE "WorkerConcurrencyKey"
            SET active = greatest(active - 1, 0), "updatedAt" = now()
            WHERE key = old_key;
        END IF;
        IF new_holds AND NOT (old_holds AND new_key = old_key) THEN
            UPDATE "WorkerConcurrencyKey" SET active = active + 1, "updatedAt" = now()
            WHERE key = new_key;
        END IF;
        IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
            PERFORM skiplock_fill_slots(old_key);
        END IF;
        IF new_key IS NOT NULL THEN
            PERFORM skiplock_fill_slots(new_key);
        END IF;
        RETURN NULL;
    END $$
"""

_RECOUNT_SLOTS = f"""
    CREATE FUNCTION skiplock_recount_slots() RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        k text;
        recorded integer;
        actual integer;
        fixed integer := 0;
    BEGIN
        -- One read finds the keys to look at; both tables in one snapshot, so a
        -- key that the triggers keep right is never among them.
        FOR k IN
            WITH jobs AS (
                SELECT "concurrencyKey" AS key,
                       count(*) FILTER (WHERE {_HOLDS.format(row='"WorkerJob"')}) AS holding,
                       min("availableAt") FILTER (WHERE status = 'PENDING' AND "heldBack")
                           AS first_waiting,
                       max("availableAt") FILTER (WHERE "heldBack" IS NULL
                                                    AND status = 'PENDING') AS last_holding
                FROM "WorkerJob"
                WHERE status IN {_ACTIVE} AND "concurrencyKey" IS NOT NULL
                GROUP BY 1
            )
            SELECT COALESCE(j.key, c.key)
            FROM jobs AS j FULL JOIN "WorkerConcurrencyKey" AS c ON c.key = j.key
            WHERE c.key IS NULL
               OR c.active <> COALESCE(j.holding, 0)
               OR (j.first_waiting IS NOT NULL
                   AND (c.active < c."limit"
                        OR j.last_holding > greatest(j.first_waiting, statement_timestamp())))
            ORDER BY 1
        LOOP
            INSERT INTO "WorkerConcurrencyKey" (key, "limit")
            VALUES (k, COALESCE((SELECT "concurrencyLimit" FROM "WorkerJob"
                                 WHERE "concurrencyKey" = k AND status IN {_ACTIVE}
                                 ORDER BY "createdAt" DESC LIMIT 1), 1))
            ON CONFLICT (key) DO NOTHING;
            SELECT active INTO recorded FROM "WorkerConcurrencyKey" WHERE key = k FOR UPDATE;
            SELECT count(*) INTO actual FROM "WorkerJob"
            WHERE "concurrencyKey" = k AND {_HOLDS.format(row='"WorkerJob"')};
            IF actual <> recorded THEN
                UPDATE "WorkerConcurrencyKey" SET active = actual, "updatedAt" = now()
                WHERE key = k;
                fixed := fixed + 1;
            END IF;
            PERFORM skiplock_fill_slots(k);
        END LOOP;
        RETURN fixed;
    END $$
"""


def upgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_key_inserted" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_key_take" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_key_release" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_key_deleted" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_key_inserted()")
    op.execute("DROP FUNCTION skiplock_key_take()")
    op.execute("DROP FUNCTION skiplock_key_release()")
    op.execute(
        'CREATE INDEX "WorkerJob_key_due_idx" ON "WorkerJob" '
        '("concurrencyKey", "heldBack", "availableAt") '
        """WHERE status = 'PENDING' AND "concurrencyKey" IS NOT NULL"""
    )
    op.execute(_FILL_SLOTS)
    op.execute(_SLOTS_CHANGED)
    op.execute(
        'CREATE TRIGGER "WorkerJob_slots_inserted" AFTER INSERT ON "WorkerJob" FOR EACH ROW '
        """WHEN (NEW."concurrencyKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_slots_changed()"""
    )
    # A WHEN as short as can be (see the docstring: what matters is decided in the
    # function).
    op.execute(
        'CREATE TRIGGER "WorkerJob_slots_updated" '
        'AFTER UPDATE OF status, "heldBack", "concurrencyKey", "availableAt" ON "WorkerJob" '
        """FOR EACH ROW WHEN (OLD."concurrencyKey" IS NOT NULL OR NEW."concurrencyKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_slots_changed()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_slots_deleted" AFTER DELETE ON "WorkerJob" FOR EACH ROW '
        f"""WHEN (OLD."concurrencyKey" IS NOT NULL AND {_HOLDS.format(row="OLD")})
        EXECUTE FUNCTION skiplock_slots_changed()"""
    )
    op.execute(
        """
        CREATE FUNCTION skiplock_slots_truncated() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- No job is left to hold a slot or to wait for one.
            DELETE FROM "WorkerConcurrencyKey";
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_slots_truncated" AFTER TRUNCATE ON "WorkerJob" '
        "FOR EACH STATEMENT EXECUTE FUNCTION skiplock_slots_truncated()"
    )
    op.execute(_RECOUNT_SLOTS)
    op.execute("SELECT skiplock_recount_slots()")


# -- the downgrade: 0005_features' functions and triggers, as they were ------------------

_OLD_FILL_SLOTS = """
    CREATE OR REPLACE FUNCTION skiplock_fill_slots(k text) RETURNS void
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


def downgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_slots_truncated" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_slots_deleted" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_slots_updated" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_slots_inserted" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_recount_slots()")
    op.execute("DROP FUNCTION skiplock_slots_truncated()")
    op.execute("DROP FUNCTION skiplock_slots_changed()")
    op.execute('DROP INDEX "WorkerJob_key_due_idx"')
    op.execute(_OLD_FILL_SLOTS)
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
