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
turn outside it, "heldBack" = false. When some of the key's jobs leave the
index (claimed, cancelled, deleted, parked, moved to another key), the end
of that statement lets the key's next jobs in, as many, and dates them now:
"availableAt" = greatest("availableAt", now). So the index is a round-robin:
a key's next jobs go to the back, behind the jobs of the other keys that
were let in before them, and each key has as many jobs in the round as its
window. Over a busy period each key starts jobs in proportion to its window,
and a light key's new job (let in at once: its window has room) waits for at
most the jobs already in the index ahead of it: the sum of the windows of
the busy keys, plus unfair jobs older than it, whatever the heavy key's
backlog. Priority still comes first: a key's next job is its best one
(priority, then age), and a higher-priority job overtakes the round, as it
overtakes any job.

Work-conserving. A window is only needed when there is someone to be fair
to: a key whose jobs leave while no other key has jobs waiting their turn
is brought to its grown window instead, `skiplock.fair_growth` (20 unless
set; 1 turns growth off) times its window, so the claims of a key alone
take full bites (a window of 10 shared by two children gave claims of 5: a
tenth to a fifth of the rate). As soon as another key has jobs waiting, the
grown key's departures let in nothing until it is back within its window,
and the sweep (skiplock_fair_fill), when it finds the key with jobs
waiting, holds back its excess at once. The price, written in the bound: a
newcomer's job may wait behind the grown window of a key that was alone
(200 jobs with the defaults), not only behind the windows.

Why "availableAt" and not a column of its own: a new column in the claim's
order changes the claim's index and the claim of every job; redating a
job that is already due only says when it got its turn, which is what
"availableAt" means for a job of the index ("claimable from"); a job that is
not due keeps its time. "createdAt" still says when it was enqueued.

Why not a share computed in the claim (a count per key, a window function,
a lateral join over keys): that is the global limit that halved River's
throughput; here an ordinary claim pays one short trigger WHEN per row and
one current_setting() per statement, a fair claim of a key with nothing
waiting one index probe per key at its statement's end, and one whose key
has jobs waiting one UPDATE per key and statement that lets the next ones in
(docs/benchmarks.md).

- "WorkerJob"."fairKey" text, nullable: the original schema's Prisma client
  reads and writes the table as before (its rows have no fair key).
- "WorkerFairKey" (key, weight 1..1000, "updatedAt"): keys without a row
  weigh 1. `skiplock weight KEY N` / `skiplock.set_weight` write it.
- "WorkerJob_fair_idx" ("heldBack", "fairKey", priority DESC, "availableAt")
  over PENDING rows that have a fair key: a key's jobs in the index (at most
  its window are read to count them), its next jobs, and whether any other
  key has jobs waiting (two probes: "heldBack" leads for them).
- Waiting its turn is "heldBack" = false with "waitingFor" NULL or 0. false
  is what a dependent waiting for its parents (0016) has too, with
  "waitingFor" > 0: neither the slot triggers (they let in rows that are
  true) nor parking (true without a concurrency key) touch these rows, and
  the dependency resolver only touches the children of its edges. A fair
  job with parents waits for them first (false, "waitingFor" > 0); when
  the resolver lets it in, the gate below applies.
- `skiplock_fair_turns()`, one trigger function:
  * BEFORE INSERT, BEFORE UPDATE OF status, "heldBack", "fairKey" and BEFORE
    DELETE, row by row, WHEN the row has a fair key (NEW's or OLD's; a
    deleted one only if it was in the index: cleanup's deletes of finished
    jobs call nothing): the
    *gate*: a row entering the index (PENDING and "heldBack" NULL, from any
    path: an insert by any producer, a retry, a snooze, a rescue, an
    un-parked job, a dependent made ready, a person's UPDATE) is let through
    if its key's window has room, else it waits ("heldBack" false). And a
    row leaving the index adds its key to the transaction setting
    `skiplock.fair_left`. The triggers are named "WorkerJob_zz_..." because
    BEFORE triggers fire in the order of their names: the gate must see what
    every other BEFORE trigger decided (a policy's concurrency key, a rate's
    hold).
  * AFTER UPDATE OF status, "heldBack", "fairKey" and AFTER DELETE, FOR EACH
    STATEMENT, WHEN `skiplock.fair_left` is not empty: the server reads that
    WHEN once, when the statement's last row is done (after the BEFORE
    triggers of all its rows), so an ordinary claim pays one
    current_setting() and queues nothing. The function takes the list,
    clears it, and in one statement for all its keys lets in the next jobs
    of each key that has some waiting (the best first: the first due in the
    claim's order; if too few are due, the ones due first, key by key), and
    wakes idle workers (NOTIFY
    skiplock_jobs), except after a claim: its claimer comes back for more,
    and a NOTIFY in every claim's transaction made each claim's commit cost
    about twice as much (measured). A claim of 100 jobs is one plpgsql call
    and one statement, not 100 of each (and 100 nested trigger calls): with
    20 busy keys (about 5 jobs a key in a claim of 100) the row triggers of
    the first version took 16 ms of such a claim, a plpgsql loop of a few
    queries a key as long, the one statement 9 ms (EXPLAIN ANALYZE, a shared
    machine). What remains is the row written once more per job.
- `skiplock_fair_fill(k)`: brings key k's jobs in the index to its window:
  lets waiting jobs in, or holds back what a lowered weight, or a window
  grown while the key was alone, leaves out (a key still alone keeps up to
  its grown window). With k NULL it fills every key
  that has jobs waiting (a loose index scan over the keys): the pool's
  recovery runs it, `skiplock cleanup` too. It returns how many jobs it let
  in.

Counting without races. A statement's end takes its key's
transaction-level advisory lock only if it is free (pg_try_advisory_xact_lock:
it never waits, so two claims that take jobs of two keys in opposite orders
cannot deadlock). With the lock it counts the key's jobs in the index and
lets in what brings them to the window (grown, if no other key waits); a
lock held elsewhere (another claim of the key, an enqueue in an open
transaction) and it lets in one for one, as many as left, which changes no
key's count and needs none. What can add to a key's jobs in the index
otherwise (the gate; a fill, asked for one key by `set_weight` or for every
key by the sweep) counts under the same lock, waiting for it, so two of them
never count the same room. A count that sees a departure not yet committed
errs on the small side, and a replacement not yet committed goes with its
departure. The gate waits for the lock unless its transaction already holds
another key's (two enqueues of two keys in opposite orders would deadlock):
then the job waits its turn; the sweep never waits. What that leaves waiting
with room in its window (rare: two entries of one key at the same instant,
or a gate's job not yet committed when the key's last jobs left) is let in
by the sweep of the pool's recovery. So a window (grown or not) is never
exceeded, and can be briefly short: the chaos soak checks it
(bench/chaos_fairness.py). A lowered weight holds back at once what the
smaller window leaves out (a job being claimed at that instant is skipped).
An enqueue in an application's transaction holds its key's lock until that
transaction ends, as a concurrency key's row lock does; so does a claim made
in one (`claim(conn=...)`): an enqueue of its keys waits for its commit. In a
REPEATABLE READ or SERIALIZABLE transaction a count reads the transaction's
snapshot, and may let one job too many in.

An earlier version counted and filled the window at every departure, row by
row, under the same lock, only tried, and skipped the replacement when the
lock was taken: concurrent claims of one key then skipped their
replacements, windows shrank to nothing until a sweep, and 20 busy keys ran
at a fifth of the rate without fairness. Falling back to one for one when
the lock is taken keeps the windows full.

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
# How many times a key's window grows while no other key has jobs waiting their turn:
# `skiplock.fair_growth` (1: never), 20 when unset or not a number.
GROWTH = 20
_GROWTH = f"""
    CASE WHEN current_setting('skiplock.fair_growth', true) ~ '^ *[0-9]{{1,4}} *$'
         THEN greatest(trim(current_setting('skiplock.fair_growth', true))::integer, 1)
         ELSE {GROWTH} END
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
# Whether a job of another key than k waits its turn: two probes of the index, which
# leads with "heldBack" for them.
_OTHERS_WAITING = """((SELECT "fairKey" FROM "WorkerJob"
                        WHERE "heldBack" = false AND "fairKey" > {k} AND status = 'PENDING'
                          AND ("waitingFor" IS NULL OR "waitingFor" = 0)
                        ORDER BY "heldBack", "fairKey" LIMIT 1) IS NOT NULL
                      OR (SELECT "fairKey" FROM "WorkerJob"
                          WHERE "heldBack" = false AND "fairKey" < {k} AND status = 'PENDING'
                            AND ("waitingFor" IS NULL OR "waitingFor" = 0)
                          ORDER BY "heldBack" DESC, "fairKey" DESC LIMIT 1) IS NOT NULL)"""
# Let up to `want` of key k's waiting jobs in, in one UPDATE, dated now (at the back of
# the round); `got` says how many. The best first: the due ones in the claim's order,
# then, if too few are due, the ones due first. One that another transaction is
# letting in is skipped. The gate lets these changes through (they were counted by
# whoever makes them).
_LET_IN = """
    PERFORM set_config('skiplock.fair_filling', 'on', true);
    UPDATE "WorkerJob"
    SET "heldBack" = NULL, "availableAt" = greatest("availableAt", statement_timestamp())
    WHERE id = ANY(ARRAY(
        SELECT id FROM "WorkerJob"
        WHERE "fairKey" = {k} AND status = 'PENDING' AND "heldBack" = false
          AND ("waitingFor" IS NULL OR "waitingFor" = 0)
          AND "availableAt" <= statement_timestamp()
        ORDER BY priority DESC, "availableAt" ASC
        LIMIT {want} FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS got = ROW_COUNT;
    IF got < {want} THEN
        UPDATE "WorkerJob" SET "heldBack" = NULL
        WHERE id = ANY(ARRAY(
            SELECT id FROM "WorkerJob"
            WHERE "fairKey" = {k} AND status = 'PENDING' AND "heldBack" = false
              AND ("waitingFor" IS NULL OR "waitingFor" = 0)
            ORDER BY "availableAt" ASC, priority DESC
            LIMIT {want} - got FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS more = ROW_COUNT;
        got := got + more;
    END IF;
    PERFORM set_config('skiplock.fair_filling', '', true);
"""

_FILL = f"""
    CREATE FUNCTION skiplock_fair_fill(k text) RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        fk text;
        cap integer;
        room integer;
        got integer;
        more integer;
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
            room := cap - {_ADMITTED.format(k="fk", cap="cap * 10000 + 100000")};
            IF room < 0 AND NOT {_OTHERS_WAITING.format(k="fk")} THEN
                room := least(cap * {_GROWTH} + room - cap, 0);  -- alone: its grown window
            END IF;
            IF room < 0 THEN
                -- A lowered weight, or a window grown while the key was alone: hold
                -- back what the window leaves out, the jobs that would be claimed
                -- last (a job being claimed is skipped).
                PERFORM set_config('skiplock.fair_filling', 'on', true);
                UPDATE "WorkerJob" SET "heldBack" = false
                WHERE id IN (SELECT id FROM "WorkerJob"
                             WHERE "fairKey" = fk AND status = 'PENDING' AND "heldBack" IS NULL
                             ORDER BY priority ASC, "availableAt" DESC
                             LIMIT -room FOR UPDATE SKIP LOCKED);
                PERFORM set_config('skiplock.fair_filling', '', true);
            ELSIF room > 0 THEN
                {_LET_IN.format(k="fk", want="room")}
                let_in := let_in + got;
            END IF;
        END LOOP;
        RETURN let_in;
    END $$
"""

_TURNS = f"""
    CREATE FUNCTION skiplock_fair_turns() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        cap integer;
        fk text;
        n integer;
        want integer;
        got integer;
        more integer;
        let_in integer := 0;
        wake boolean;
        left_keys text;
        locked_any boolean;
        short_keys text[];
        short_wants integer[];
    BEGIN
        IF TG_LEVEL = 'STATEMENT' THEN
            -- The end of a statement that took jobs of fair keys out of the index (the
            -- row triggers below listed their keys): each key lets its next jobs in,
            -- as many as left in one UPDATE. Under the key's lock, if it is free,
            -- the key is brought to its window instead, grown GROWTH times while no
            -- other key has jobs waiting; without it, one for one.
            -- Taken and cleared first: the UPDATEs below end statements of their own.
            wake := current_setting('skiplock.fair_wake', true) = 'on';
            left_keys := current_setting('skiplock.fair_left', true);
            PERFORM set_config('skiplock.fair_left', '', true);
            PERFORM set_config('skiplock.fair_wake', '', true);
            -- One statement for every key: a plpgsql loop of a few queries a key cost
            -- more than the rows it let in, with the ~5 jobs a key that a claim of 100
            -- among 20 busy keys takes.
            PERFORM set_config('skiplock.fair_filling', 'on', true);
            WITH gone AS (
                SELECT key, count(*)::integer AS departed
                FROM unnest(('{{' || rtrim(left_keys, ',') || '}}')::text[]) AS key
                GROUP BY key ORDER BY key
            ), keys AS MATERIALIZED (
                SELECT gone.key, gone.departed,
                       pg_try_advisory_xact_lock({_LOCK_ID.format(k="gone.key")}) AS locked
                FROM gone WHERE {_WAITING.format(k="gone.key")}
            ), wants AS MATERIALIZED (
                SELECT keys.key, keys.locked,
                       CASE WHEN keys.locked
                            THEN c.target - {_ADMITTED.format(k="keys.key", cap="c.target")}
                            ELSE keys.departed END AS wanted
                FROM keys CROSS JOIN LATERAL (
                    SELECT CASE WHEN keys.locked THEN ({_WINDOW.format(k="keys.key")})
                                * CASE WHEN {_OTHERS_WAITING.format(k="keys.key")} THEN 1
                                       ELSE {_GROWTH} END END AS target
                    OFFSET 0) AS c
            ), picked AS (
                SELECT next.id FROM wants CROSS JOIN LATERAL (
                    SELECT id FROM "WorkerJob"
                    WHERE "fairKey" = wants.key AND status = 'PENDING' AND "heldBack" = false
                      AND ("waitingFor" IS NULL OR "waitingFor" = 0)
                      AND "availableAt" <= statement_timestamp()
                    ORDER BY priority DESC, "availableAt" ASC
                    LIMIT greatest(wants.wanted, 0) FOR UPDATE SKIP LOCKED) AS next
            ), moved AS (
                UPDATE "WorkerJob" AS j
                SET "heldBack" = NULL,
                    "availableAt" = greatest(j."availableAt", statement_timestamp())
                WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
                RETURNING j."fairKey"
            ), per_key AS (
                SELECT "fairKey" AS key, count(*)::integer AS moved_n FROM moved GROUP BY 1
            )
            SELECT (SELECT COALESCE(sum(per_key.moved_n), 0) FROM per_key)::integer,
                   COALESCE((SELECT bool_or(wants.locked) FROM wants), false),
                   array_agg(wants.key), array_agg(wants.wanted - COALESCE(per_key.moved_n, 0))
            INTO let_in, locked_any, short_keys, short_wants
            FROM wants LEFT JOIN per_key ON per_key.key = wants.key
            WHERE wants.wanted > COALESCE(per_key.moved_n, 0);
            PERFORM set_config('skiplock.fair_filling', '', true);
            IF locked_any THEN
                PERFORM set_config('skiplock.fair_locked', 'on', true);
            END IF;
            -- Keys with too few jobs due: the ones due first (rare: delayed jobs).
            FOR i IN 1..COALESCE(array_length(short_keys, 1), 0) LOOP
                fk := short_keys[i];
                want := short_wants[i];
                PERFORM set_config('skiplock.fair_filling', 'on', true);
                UPDATE "WorkerJob" SET "heldBack" = NULL
                WHERE id = ANY(ARRAY(
                    SELECT id FROM "WorkerJob"
                    WHERE "fairKey" = fk AND status = 'PENDING' AND "heldBack" = false
                      AND ("waitingFor" IS NULL OR "waitingFor" = 0)
                    ORDER BY "availableAt" ASC, priority DESC
                    LIMIT want FOR UPDATE SKIP LOCKED));
                GET DIAGNOSTICS got = ROW_COUNT;
                PERFORM set_config('skiplock.fair_filling', '', true);
                let_in := let_in + got;
            END LOOP;
            -- Wake idle workers, but not for a claim: its claimer comes back for more,
            -- and a NOTIFY per claim made each claim's commit cost about twice as much.
            IF wake AND let_in > 0 THEN
                PERFORM pg_notify('skiplock_jobs', '');
            END IF;
            RETURN NULL;
        END IF;
        -- A job of a key leaves the index: its key is listed for the statement's end.
        -- A fill's own holds (a lowered weight) are not replaced.
        IF OLD."fairKey" IS NOT NULL AND OLD.status = 'PENDING' AND OLD."heldBack" IS NULL
           AND (TG_OP = 'DELETE' OR NEW.status <> 'PENDING' OR NEW."heldBack" IS NOT NULL
                OR NEW."fairKey" IS DISTINCT FROM OLD."fairKey")
           AND current_setting('skiplock.fair_filling', true) IS DISTINCT FROM 'on' THEN
            PERFORM set_config('skiplock.fair_left',
                COALESCE(current_setting('skiplock.fair_left', true), '')
                || '"' || replace(replace(OLD."fairKey", '\\', '\\\\'), '"', '\\"') || '",',
                true);
            IF TG_OP = 'DELETE' OR NEW.status <> 'PROCESSING' THEN
                PERFORM set_config('skiplock.fair_wake', 'on', true);
            END IF;
        END IF;
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        -- The gate: only a row entering the index, of its key, is looked at.
        IF NEW."fairKey" IS NULL OR NEW.status <> 'PENDING' OR NEW."heldBack" IS NOT NULL
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
        '("heldBack", "fairKey", priority DESC, "availableAt") '
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
        """FOR EACH ROW WHEN (NEW."fairKey" IS NOT NULL OR OLD."fairKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_fair_turns()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_zz_fair_gate_deleted" BEFORE DELETE ON "WorkerJob" '
        """FOR EACH ROW WHEN (OLD."fairKey" IS NOT NULL AND OLD.status = 'PENDING'
                              AND OLD."heldBack" IS NULL)
        EXECUTE FUNCTION skiplock_fair_turns()"""
    )
    # The statement's end, queued only when its rows listed some key (the WHEN is
    # read once a statement, when its last row is done): an ordinary claim pays one
    # current_setting().
    for event in ('UPDATE OF status, "heldBack", "fairKey"', "DELETE"):
        name = "WorkerJob_fair_left" if event != "DELETE" else "WorkerJob_fair_deleted"
        op.execute(
            f'CREATE TRIGGER "{name}" AFTER {event} ON "WorkerJob" '
            """FOR EACH STATEMENT
            WHEN (current_setting('skiplock.fair_left', true) <> '')
            EXECUTE FUNCTION skiplock_fair_turns()"""
        )


def downgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_fair_deleted" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_fair_left" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_zz_fair_gate_deleted" ON "WorkerJob"')
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
