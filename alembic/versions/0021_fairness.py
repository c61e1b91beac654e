"""Weighted fairness between keys: each fair key has a few places in the claim's index.

Revision ID: 0021_fairness
Revises: 0020_debounce
Create Date: 2026-12-05

A job may name a *fair key* ("fairKey": a user, a tenant). Under contention
the workers are shared between the keys that have jobs waiting, in
proportion to their weights ("WorkerFairKey".weight, 1 unless set), and a
key with one job waiting starts within a bounded number of claims, however
many jobs another key has queued.

How. The claim is not changed: it still reads its partial index (status
PENDING, "heldBack" IS NULL) in the order priority DESC, "availableAt" ASC,
and never looks at keys. Instead each fair key keeps at most its *window*,
weight x base (the base is the database setting `skiplock.fair_window`,
10 unless set), of its PENDING jobs in that index; the others wait their
turn outside it, "heldBack" = false. When one of the key's jobs leaves the
index (claimed, cancelled, deleted, parked, moved to another key), a
trigger lets the key's next job in, and dates it now: "availableAt" =
greatest("availableAt", now). So the index is a round-robin: a key's next
job goes to the back, behind the jobs of the other keys that were let in
before it, and each key has as many jobs in the round as its window. Over a
busy period each key starts jobs in proportion to its window, and a light
key's new job (let in at once: its window has room) waits for at most the
jobs already in the index ahead of it: the sum of the windows of the busy
keys, plus unfair jobs older than it, whatever the heavy key's backlog.
Priority still comes first: a key's next job is its best one (priority,
then age), and a higher-priority job overtakes the round, as it overtakes
any job.

Why "availableAt" and not a column of its own: a new column in the claim's
order changes the claim's index and the claim of every job; redating a
job that is already due only says when it got its turn, which is what
"availableAt" means for a job of the index ("claimable from"); a job that is
not due keeps its time. "createdAt" still says when it was enqueued.

Why not a share computed in the claim (a count per key, a window function,
a lateral join over keys): that is the global limit that halved River's
throughput; here an ordinary claim pays two short trigger WHENs, a fair
claim of a key with nothing waiting one index probe in its trigger, and one
whose key has jobs waiting the UPDATE that lets the next one in
(docs/benchmarks.md: 0.99 of the rate without fair keys when the windows do
not bind, about half when every key's do).

- "WorkerJob"."fairKey" text, nullable: the original schema's Prisma client
  reads and writes the table as before (its rows have no fair key).
- "WorkerFairKey" (key, weight 1..1000, "updatedAt"): keys without a row
  weigh 1. `skiplock weight KEY N` / `skiplock.set_weight` write it.
- "WorkerJob_fair_idx" ("fairKey", "heldBack", priority DESC, "availableAt")
  over PENDING rows that have a fair key: a key's jobs in the index (at most
  its window are read to count them) and its next job, one probe each.
- Waiting its turn is "heldBack" = false with "waitingFor" NULL or 0. false
  is what a dependent waiting for its parents (0016) has too, with
  "waitingFor" > 0: neither the slot triggers (they let in rows that are
  true) nor parking (true without a concurrency key) touch these rows, and
  the dependency resolver only touches the children of its edges. A fair
  job with parents waits for them first (false, "waitingFor" > 0); when
  the resolver lets it in, the gate below applies.
- `skiplock_fair_turns()`, one trigger function:
  * BEFORE INSERT, and BEFORE UPDATE OF status, "heldBack", "fairKey" (WHEN
    NEW."fairKey" IS NOT NULL), the *gate*: a row entering the index (PENDING
    and "heldBack" NULL, from any path: an insert by any producer, a retry,
    a snooze, a rescue, an un-parked job, a dependent made ready, a person's
    UPDATE) is let through if its key's window has room, else it waits
    ("heldBack" false). The triggers are named "WorkerJob_zz_..." because
    BEFORE triggers fire in the order of their names: the gate must see
    what every other BEFORE trigger decided (a policy's concurrency key, a
    rate's hold).
  * AFTER UPDATE OF status, "heldBack", "fairKey" and AFTER DELETE (WHEN
    OLD."fairKey" IS NOT NULL): a row of a key that left the index lets the
    key's next job in, the best first (the first due in the claim's order;
    when none is due, the one due first), and wakes idle workers (NOTIFY
    skiplock_jobs), except after a claim: its claimer comes back for more,
    and a NOTIFY in every claim's transaction made each claim's commit cost
    about twice as much (measured). The WHENs read one column: the server
    evaluates them for every update of those columns, an ordinary claim's
    included.
- `skiplock_fair_fill(k)`: brings key k's jobs in the index to its window:
  lets waiting jobs in, or holds back what a lowered weight leaves out.
  With k NULL it fills every key that has jobs waiting (a loose index scan
  over the keys): the pool's recovery runs it, `skiplock cleanup` too. It
  returns how many jobs it let in.

Counting without races. A job that leaves the index lets exactly one job of
its key in (its replacement), so that path changes no key's count, needs no
count and takes no lock: claims never wait for each other, and a claim of a
busy key pays one index probe and one UPDATE per job. What can add to a
key's jobs in the index (the gate; a fill, asked for one key by
`set_weight` or for every key by the sweep) counts under the key's
transaction-level advisory lock, so two of them never count the same room;
a count that sees a departure not yet committed errs on the small side, and
a replacement not yet committed goes with its departure. The gate waits for
that lock unless its transaction already holds another key's (two enqueues
of two keys in opposite orders would deadlock): then the job waits its
turn; the sweep never waits. What that leaves waiting with room in its
window (rare: two entries of one key at the same instant, or a gate's job
not yet committed when the key's last jobs left) is let in by the sweep of
the pool's recovery. So a window is never exceeded, and can be briefly
short: the chaos soak checks it (bench/chaos_fairness.py). A lowered weight
holds back at once what the smaller window leaves out (a job being claimed
at that instant is skipped, and its replacement keeps the key one over
until the next sweep). An enqueue in an application's transaction holds its
key's lock until that transaction ends, as a concurrency key's row lock
does. In a REPEATABLE READ or SERIALIZABLE transaction a gate counts from
the transaction's snapshot, and may let one job too many in.

The first version counted and filled the window at every departure, under
the same lock, only tried (a claim that takes jobs of two keys while another
takes jobs of the same two in the other order would deadlock on a lock it
waits for): concurrent claims of one key then skipped their replacements,
windows shrank to nothing until a sweep, and 20 busy keys ran at a fifth of
the rate without fairness; the count alone cost about 0.1 ms a job.

A job with a concurrency key is not held for fairness (the gate stands
aside): the slot triggers count the jobs they let in themselves
(skiplock_fill_slots), and a second gate on the same change would break
their counts; a concurrency key already bounds what its key takes, to its
limit. `enqueue` refuses the two together; a row written with both gets
the concurrency limit only.

Delays: a job that is not due may be let in (it keeps its time): a key
whose window holds only delayed jobs has nothing else to let in, and
nothing but a timer would let a held delayed job in when it comes due. It
holds one place of its key's window until it runs. A raised weight fills
the window at once; a lowered one holds back the excess at once.
"""

from __future__ import annotations

from alembic import op

revision = "0021_fairness"
down_revision = "0020_debounce"
branch_labels = None
depends_on = None

# A key's window: its weight times the base, `skiplock.fair_window` (ALTER
# DATABASE ... SET skiplock.fair_window = N), 10 when unset or not a number.
_WINDOW = """
    COALESCE((SELECT weight FROM "WorkerFairKey" WHERE key = {k}), 1)
    * CASE WHEN current_setting('skiplock.fair_window', true) ~ '^ *[0-9]{{1,5}} *$'
           THEN greatest(trim(current_setting('skiplock.fair_window', true))::integer, 1)
           ELSE 10 END
"""
_LOCK_ID = "hashtextextended('skiplock.fair:' || {k}, 0)"
# How many of key k's jobs are in the claim's index, counting no further than `cap`.
_ADMITTED = """(SELECT count(*) FROM (SELECT FROM "WorkerJob"
                  WHERE "fairKey" = {k} AND status = 'PENDING' AND "heldBack" IS NULL
                  LIMIT {cap}) AS admitted)"""
# Whether some job of key k waits its turn.
_WAITING = """EXISTS (SELECT FROM "WorkerJob"
                      WHERE "fairKey" = {k} AND status = 'PENDING' AND "heldBack" = false
                        AND ("waitingFor" IS NULL OR "waitingFor" = 0))"""
# Key k's next job into next_id (FOUND says whether there is one): the first due in
# the claim's order, else the one due first; one that another transaction is letting
# in is skipped.
_NEXT = """
    SELECT id INTO next_id FROM "WorkerJob"
    WHERE "fairKey" = {k} AND status = 'PENDING' AND "heldBack" = false
      AND ("waitingFor" IS NULL OR "waitingFor" = 0) AND "availableAt" <= statement_timestamp()
    ORDER BY priority DESC, "availableAt" ASC
    LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT id INTO next_id FROM "WorkerJob"
        WHERE "fairKey" = {k} AND status = 'PENDING' AND "heldBack" = false
          AND ("waitingFor" IS NULL OR "waitingFor" = 0)
        ORDER BY "availableAt" ASC, priority DESC
        LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
"""
# Let next_id in, dated now: at the back of the round. The gate lets this change
# through (it was counted by whoever makes it).
_LET_IN = """
    PERFORM set_config('skiplock.fair_filling', 'on', true);
    UPDATE "WorkerJob"
    SET "heldBack" = NULL, "availableAt" = greatest("availableAt", statement_timestamp())
    WHERE id = next_id;
    PERFORM set_config('skiplock.fair_filling', '', true);
"""

_FILL = f"""
    CREATE FUNCTION skiplock_fair_fill(k text) RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        fk text;
        cap integer;
        room integer;
        next_id text;
        let_in integer := 0;
    BEGIN
        FOR fk IN
            SELECT k WHERE k IS NOT NULL
            UNION ALL
            -- Every key with jobs waiting: one index probe per key, not per job.
            (WITH RECURSIVE keys(key) AS (
                SELECT min("fairKey") FROM "WorkerJob"
                WHERE status = 'PENDING' AND "fairKey" IS NOT NULL AND "heldBack" = false
                  AND k IS NULL
                UNION ALL
                SELECT (SELECT min("fairKey") FROM "WorkerJob"
                        WHERE status = 'PENDING' AND "fairKey" > keys.key
                          AND "heldBack" = false)
                FROM keys WHERE keys.key IS NOT NULL)
             SELECT key FROM keys WHERE key IS NOT NULL)
        LOOP
            CONTINUE WHEN k IS NULL AND NOT {_WAITING.format(k="fk")};
            -- The sweep (k NULL) never waits for a key's lock; one key, asked for
            -- alone, waits unless this transaction holds another key's lock.
            IF NOT pg_try_advisory_xact_lock({_LOCK_ID.format(k="fk")}) THEN
                CONTINUE WHEN k IS NULL
                    OR current_setting('skiplock.fair_locked', true) = 'on';
                PERFORM pg_advisory_xact_lock({_LOCK_ID.format(k="fk")});
            END IF;
            PERFORM set_config('skiplock.fair_locked', 'on', true);
            cap := {_WINDOW.format(k="fk")};
            room := cap - {_ADMITTED.format(k="fk", cap="cap + 100000")};
            IF room < 0 THEN
                -- A lowered weight: hold back what the smaller window leaves out, the
                -- jobs that would be claimed last (a job being claimed is skipped).
                PERFORM set_config('skiplock.fair_filling', 'on', true);
                UPDATE "WorkerJob" SET "heldBack" = false
                WHERE id IN (SELECT id FROM "WorkerJob"
                             WHERE "fairKey" = fk AND status = 'PENDING' AND "heldBack" IS NULL
                             ORDER BY priority ASC, "availableAt" DESC
                             LIMIT -room FOR UPDATE SKIP LOCKED);
                PERFORM set_config('skiplock.fair_filling', '', true);
            END IF;
            WHILE room > 0 LOOP
                {_NEXT.format(k="fk")}
                EXIT WHEN NOT FOUND;
                {_LET_IN}
                room := room - 1;
                let_in := let_in + 1;
            END LOOP;
        END LOOP;
        RETURN let_in;
    END $$
"""

_TURNS = f"""
    CREATE FUNCTION skiplock_fair_turns() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        cap integer;
        next_id text;
    BEGIN
        IF TG_WHEN = 'AFTER' THEN
            -- A job of the key left the index: its next job takes the place, one for
            -- one, without counting and without the key's lock. A fill's own holds
            -- (a lowered weight) are not replaced.
            IF OLD.status = 'PENDING' AND OLD."heldBack" IS NULL
               AND (TG_OP = 'DELETE' OR NEW.status <> 'PENDING' OR NEW."heldBack" IS NOT NULL
                    OR NEW."fairKey" IS DISTINCT FROM OLD."fairKey")
               AND current_setting('skiplock.fair_filling', true) IS DISTINCT FROM 'on' THEN
                {_NEXT.format(k='OLD."fairKey"')}
                IF FOUND THEN
                    {_LET_IN}
                    -- Wake idle workers, but not for a claim: its claimer comes back
                    -- for more, and a NOTIFY per claim made each claim's commit cost
                    -- about twice as much.
                    IF TG_OP = 'DELETE' OR NEW.status <> 'PROCESSING' THEN
                        PERFORM pg_notify('skiplock_jobs', '');
                    END IF;
                END IF;
            END IF;
            RETURN NULL;
        END IF;
        -- The gate: only a row entering the index, of its key, is looked at.
        IF NEW.status <> 'PENDING' OR NEW."heldBack" IS NOT NULL
           OR NEW."concurrencyKey" IS NOT NULL
           OR (TG_OP = 'UPDATE' AND OLD.status = 'PENDING' AND OLD."heldBack" IS NULL
               AND OLD."fairKey" = NEW."fairKey")
           OR current_setting('skiplock.fair_filling', true) = 'on' THEN
            RETURN NEW;
        END IF;
        IF NOT pg_try_advisory_xact_lock({_LOCK_ID.format(k='NEW."fairKey"')}) THEN
            IF current_setting('skiplock.fair_locked', true) = 'on' THEN
                -- Waiting for this key while holding another could deadlock: the job
                -- waits its turn instead (the key's next job to leave, or the sweep,
                -- lets it in).
                NEW."heldBack" := false;
                RETURN NEW;
            END IF;
            PERFORM pg_advisory_xact_lock({_LOCK_ID.format(k='NEW."fairKey"')});
        END IF;
        PERFORM set_config('skiplock.fair_locked', 'on', true);
        cap := {_WINDOW.format(k='NEW."fairKey"')};
        IF {_ADMITTED.format(k='NEW."fairKey"', cap="cap")} >= cap THEN
            NEW."heldBack" := false;
        END IF;
        RETURN NEW;
    END $$
"""


def upgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" ADD COLUMN "fairKey" text')
    op.execute(
        """
        CREATE TABLE "WorkerFairKey" (
            key         text        PRIMARY KEY,
            weight      integer     NOT NULL CHECK (weight BETWEEN 1 AND 1000),
            "updatedAt" timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        'CREATE INDEX "WorkerJob_fair_idx" ON "WorkerJob" '
        '("fairKey", "heldBack", priority DESC, "availableAt") '
        """WHERE status = 'PENDING' AND "fairKey" IS NOT NULL"""
    )
    op.execute(_FILL)
    op.execute(_TURNS)
    op.execute(
        'CREATE TRIGGER "WorkerJob_zz_fair_gate_inserted" BEFORE INSERT ON "WorkerJob" '
        """FOR EACH ROW WHEN (NEW."fairKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_fair_turns()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_zz_fair_gate_updated" '
        'BEFORE UPDATE OF status, "heldBack", "fairKey" ON "WorkerJob" '
        """FOR EACH ROW WHEN (NEW."fairKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_fair_turns()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_fair_left" '
        'AFTER UPDATE OF status, "heldBack", "fairKey" ON "WorkerJob" '
        """FOR EACH ROW WHEN (OLD."fairKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_fair_turns()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_fair_deleted" AFTER DELETE ON "WorkerJob" '
        """FOR EACH ROW WHEN (OLD."fairKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_fair_turns()"""
    )


def downgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_fair_deleted" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_fair_left" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_zz_fair_gate_updated" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_zz_fair_gate_inserted" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_fair_turns()")
    op.execute("DROP FUNCTION skiplock_fair_fill(text)")
    # The jobs waiting their turn go back into the claim's index.
    op.execute(
        """UPDATE "WorkerJob" SET "heldBack" = NULL
           WHERE status = 'PENDING' AND "fairKey" IS NOT NULL AND "heldBack" = false
             AND ("waitingFor" IS NULL OR "waitingFor" = 0)"""
    )
    op.execute('DROP INDEX "WorkerJob_fair_idx"')
    op.execute('DROP TABLE "WorkerFairKey"')
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN "fairKey"')
