"""Rate limits per time window: at most N starts of a key in any window of P seconds.

Revision ID: 0018_rates
Revises: 0017_policies
Create Date: 2026-12-05

A job may carry a *rate* ("rate", canonical `'<count>/<seconds>s'`, e.g.
`'10/60s'` for `10/m`) and a *rate key* ("rateKey"; the job's type when it
has a rate and no key). What is limited is the *start*: a claim, the move
from PENDING to PROCESSING, whose time is the claim's statement time (the
job's "startedAt"). A retry, a rescue, a snooze, a release all run the job
again: each run is another start. The guarantee: in every half-open window
(t - P, t] at most `count` jobs of the key start, on every host together.

Tokens. A key has `count` tokens. A job must hold one to be in the claim's
index; its start uses the token, which becomes free again P seconds after
that start. Every job a token lets in gets "availableAt" >= the time the token
became free, and the claim only takes jobs with "availableAt" <= its own
statement time, so two starts on one token are at least P apart; a half-open
window of P seconds holds at most one start per token: at most `count` in all.
That holds whatever the order of claims, commits and clocks of the hosts (one
clock: the server's), and across a restart (the state is in tables).

- "WorkerRateKey" (key, count, "periodS", "freeAt", "freeCount",
  "freedUpTo"): per key, the tokens that become free in the future, as
  buckets (time, how many) in time order. A token's time is rounded up to a
  1/32 of the period, which can only delay a start, never advance one, and
  keeps a key's row small (at most about 33 buckets) whatever the rate.
  Tokens whose time has passed are free; "freedUpTo" is the latest of their
  times, and a job let in on one of them gets at least that time (a claim
  whose statement began before the token was free must not take it). The
  tokens held by jobs let in are not stored: they are counted, so nothing can
  drift between a count and the rows. Free now = count - jobs let in - tokens
  in buckets. The latest enqueue's rate is the key's.
- "WorkerRateToken" (key, "freeAt"): a token freed by a start, or by a job
  let in that left without one, is written here, without the key's lock: the
  claim moves jobs of many keys in one statement, in its rows' order, and two
  claims that locked the keys as they went could deadlock. The key's next
  letting-in folds these rows into its own (deleting them). It counts the
  jobs let in first and reads the tokens after, so a start that commits in
  between is counted twice (one token too few, for a moment), never missed.
  A row with "freeAt" NULL is a note to look at the key again.
- A job of a rate key waits for a token with "heldBack" = false, outside the
  claim's partial index: a rate-limited backlog costs the claim nothing. A
  dependent waiting for its parents is "heldBack" false with "waitingFor" > 0;
  one waiting for its window has "waitingFor" NULL or 0, so the two never mix:
  the dependency resolver only touches the children of its edges, and this
  migration's gate holds back again any job of a rate key that something else
  (the resolver making a dependent ready, `skiplock retry`, a script) puts in
  the queue without a token. The slot triggers (0005, 0013) count holders by
  "heldBack" IS NULL and let in only rows that are true: a job waiting for its
  window holds no concurrency slot and is let in by none. Parking (0012) takes
  only rows that are NULL.
- Let in (`skiplock_rate_admit(key, NULL, false)`, under the lock of the key's
  row, taken with SKIP LOCKED: a key that another transaction holds gets a
  note in "WorkerRateToken" instead of a wait, which the key's next move or a
  master's maintenance takes up; `skiplock_rate_admit(key, freed, started)`
  writes a freed token down; `skiplock_rate_admit(key, NULL, true)` lets in
  even while more than 32 jobs of the key are let in):
  the best waiting job (the first due one in the claim's order, else the
  first in that order, read in the index's order whatever the backlog) takes a
  free token, or the token that is free first; it becomes
  "heldBack" NULL (or true with a concurrency key: it then waits for a slot
  as any keyed job, both limits hold) with "availableAt" = the token's time
  when later than its own. At most least(count, 64) jobs of a key are let in
  at once, and while more than 32 are, a start or an enqueue of the key costs
  a probe of the index, not a letting-in; of those at most one is not due yet
  (it sits in the claim's index until its token's time): 10,000 keys waiting for their windows put at
  most 10,000 rows there, not their backlogs. A job let in on a token keeps
  the token while it waits for a concurrency slot.
- `skiplock_rate_gate()`, BEFORE INSERT and BEFORE UPDATE of a job of a rate
  key: on insert it checks and canonicalises the rate (one clear error for
  anything else), fills the key (the type) or the rate (the key's), and holds
  the job back (false); on update, a job that comes to want a place in the
  queue (PENDING, "heldBack" not false) without having held a token of this
  key is held back instead, and a job let in keeps the time its token allows
  ("availableAt" is not moved earlier). So a row written by psql, Prisma or
  another language is limited the same, and so is every path that moves a job.
- The gate also writes down, for each row as the statement moves it, the
  token it frees: a start's, free P seconds later; that of a job let in that
  leaves without starting (cancelled, deleted, its key changed), free from its
  "availableAt" (never earlier than the token was). BEFORE, so that when the
  AFTER triggers run, every row of the statement has written its token down.
- `skiplock_rate_changed()`, AFTER INSERT, UPDATE, DELETE of a job of a rate
  key: after a start, a token freed, or a new waiting job, the key's next jobs
  are let in. Its own updates are marked with the transaction-local
  setting `skiplock.rating`, and both functions stand aside for them. The
  claim of a job without a rate key pays the evaluation of the trigger's WHEN
  alone.
- `skiplock_rate_wake()`: the safety net a master's maintenance calls every
  heartbeat interval: it lets in the jobs of every key that has a row in
  "WorkerRateToken" (a key that was locked when a trigger wanted it, a
  waiting job whose row another transaction held). A TRUNCATE of
  "WorkerJob" keeps both tables: their tokens are the starts of the last
  window, which still count.
- "WorkerJob_rate_idx" ("rateKey", "heldBack", priority, "availableAt") over
  PENDING jobs of a rate key that wait for no parent: a key's next job, and
  its jobs let in, each one probe.

A job let in and then cancelled gives its token back, at its "availableAt": a
token is never lost, and never used early. A rate lowered takes effect once
the tokens of the old one have been used (within a window). Jobs with a rate
key are never started by a claim that did not go through a token, unless
another client moves them to PROCESSING itself; such a start is counted
anyway. Every change is a nullable column: the original schema's Prisma
client reads and writes "WorkerJob" as before.
"""

from __future__ import annotations

from alembic import op

revision = "0018_rates"
down_revision = "0017_policies"
branch_labels = None
depends_on = None

# Jobs of a key let in at once; see the docstring.
MAX_LET_IN = 64
# An update that concerns a rate: a job of a rate key that was or becomes PENDING (a
# start, a job let in that leaves, one that wants in). A completion is neither.
_PENDING_RATED = """(OLD."rateKey" IS NOT NULL AND OLD.status = 'PENDING')
                    OR (NEW."rateKey" IS NOT NULL AND NEW.status = 'PENDING')"""

_RATE_ADMIT = rf"""
    CREATE FUNCTION skiplock_rate_admit(k text, freed timestamptz, started boolean)
    RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        r "WorkerRateKey"%ROWTYPE;
        now_ts timestamptz := clock_timestamp();
        fa timestamptz[];
        fc integer[];
        fu timestamptz;
        g double precision;
        t timestamptz;
        n integer;
        free integer;
        let_in integer;
        future boolean;
        cap integer;
        next_id text;
        next_at timestamptz;
        next_key text;
        due_at timestamptz;
        keyed text[] := '{{}}';
        ids text[] := '{{}}';
        ats timestamptz[] := '{{}}';
        stop boolean := false;
        skipped boolean := false;
        outer_mark text := current_setting('skiplock.rating', true);
    BEGIN
        IF freed IS NOT NULL THEN
            -- A token freed: by a start, one period after it; by a job let in that
            -- left without a start, at its time. Only written down, without the
            -- key's lock (a BEFORE trigger of that row calls this, in the middle of
            -- a statement that may move jobs of many keys).
            IF started THEN
                freed := freed + make_interval(secs => (SELECT "periodS" FROM "WorkerRateKey"
                                                        WHERE key = k));
            END IF;
            INSERT INTO "WorkerRateToken" (key, "freeAt") VALUES (k, freed);
            RETURN;
        END IF;
        -- Nothing happened to any rate key since this key's jobs were let in, in this
        -- transaction (the rest of a claim's rows of one key): nothing more to let in.
        IF current_setting('skiplock.rate_done', true)
           = k || ':' || COALESCE(current_setting('skiplock.rate_events', true), '') THEN
            RETURN;
        END IF;
        PERFORM set_config('skiplock.rate_done',
                           k || ':' || COALESCE(current_setting('skiplock.rate_events', true), ''),
                           true);
        -- More than 32 jobs of the key are let in and wait for a claim, whose start
        -- comes back here: nothing to do yet (a rate that does not bind then pays
        -- this probe on most starts, and a letting-in on one in 32). The maintenance
        -- (started = true with no token) looks anyway.
        IF NOT started THEN
            SELECT count INTO n FROM "WorkerRateKey" WHERE key = k;
            IF FOUND THEN
                SELECT count(*) INTO let_in
                FROM (SELECT FROM "WorkerJob"
                      WHERE "rateKey" = k AND status = 'PENDING'
                        AND COALESCE("waitingFor", 0) = 0 AND "heldBack" IS NULL
                      UNION ALL
                      SELECT FROM "WorkerJob"
                      WHERE "rateKey" = k AND status = 'PENDING'
                        AND COALESCE("waitingFor", 0) = 0 AND "heldBack") AS let;
                IF let_in > {MAX_LET_IN // 2} THEN
                    RETURN;
                END IF;
            END IF;
        END IF;
        -- Let jobs in, under the key's lock; a key another transaction holds is left
        -- a note instead of a wait (a claim or an enqueue of many keys would wait for
        -- them in its rows' order, and two of them could deadlock), which the next
        -- move of the key or a master's maintenance (skiplock_rate_wake) takes up.
        SELECT * INTO r FROM "WorkerRateKey" WHERE key = k FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            IF EXISTS (SELECT FROM "WorkerRateKey" WHERE key = k) THEN
                INSERT INTO "WorkerRateToken" (key, "freeAt") VALUES (k, NULL);
            ELSE
                DELETE FROM "WorkerRateToken" WHERE key = k;  -- a key cleanup forgot
            END IF;
            RETURN;
        END IF;
        -- The jobs let in first, then the tokens written down: a start committed in
        -- between is then counted twice (a token too few for now), never missed.
        -- Two ranges of the index, not one with an OR, which the index would only
        -- filter by: it would read the key's whole backlog.
        SELECT count(*), coalesce(bool_or(a > now_ts), false) INTO let_in, future
        FROM (SELECT "availableAt" AS a FROM "WorkerJob"
              WHERE "rateKey" = k AND status = 'PENDING' AND COALESCE("waitingFor", 0) = 0
                AND "heldBack" IS NULL
              UNION ALL
              SELECT "availableAt" FROM "WorkerJob"
              WHERE "rateKey" = k AND status = 'PENDING' AND COALESCE("waitingFor", 0) = 0
                AND "heldBack") AS let;
        fa := r."freeAt";
        fc := r."freeCount";
        fu := r."freedUpTo";
        FOR t IN
            WITH d AS (DELETE FROM "WorkerRateToken" WHERE key = k RETURNING "freeAt")
            SELECT "freeAt" FROM d WHERE "freeAt" IS NOT NULL ORDER BY 1
        LOOP
            IF t <= now_ts THEN
                fu := greatest(fu, t);
            ELSE
                -- Rounded up to 1/32 of the period: later, never earlier.
                g := r."periodS" / 32.0;
                t := greatest(to_timestamp(ceil(extract(epoch FROM t) / g) * g), t);
                n := cardinality(fa);
                IF n = 0 OR t > fa[n] THEN
                    fa := fa || t;
                    fc := fc || 1;
                ELSE
                    fc[n] := fc[n] + 1;  -- later than it could be: never early
                END IF;
            END IF;
        END LOOP;
        WHILE cardinality(fa) > 0 AND fa[1] <= now_ts LOOP
            fu := greatest(fu, fa[1]);
            fa := fa[2:];
            fc := fc[2:];
        END LOOP;
        free := r.count - let_in - coalesce((SELECT sum(x) FROM unnest(fc) AS x), 0);
        cap := least(r.count, {MAX_LET_IN});
        -- The due jobs first, in the claim's order, in one read; then, if they ran
        -- out, the first of the others. Each takes a free token, else the one free
        -- first; at most one job that is not due yet is let in (the claim's index
        -- holds no backlog).
        IF let_in < cap THEN
            FOR next_id, next_at, next_key IN
                SELECT id, "availableAt", "concurrencyKey" FROM "WorkerJob"
                WHERE "rateKey" = k AND status = 'PENDING' AND NOT "heldBack"
                  AND COALESCE("waitingFor", 0) = 0 AND "availableAt" <= now_ts
                ORDER BY priority DESC, "availableAt" ASC
                LIMIT cap - let_in FOR UPDATE SKIP LOCKED
            LOOP
                IF free > 0 THEN
                    due_at := greatest(next_at, fu);
                ELSIF cardinality(fa) > 0 THEN
                    due_at := greatest(next_at, fa[1]);
                ELSE
                    stop := true;  -- every token is held by a job let in: its start lets in
                    EXIT;
                END IF;
                IF due_at > now_ts AND future THEN
                    stop := true;
                    EXIT;
                END IF;
                IF free > 0 THEN
                    free := free - 1;
                ELSE
                    fc[1] := fc[1] - 1;
                    IF fc[1] = 0 THEN
                        fa := fa[2:];
                        fc := fc[2:];
                    END IF;
                END IF;
                ids := ids || next_id;
                ats := ats || due_at;
                IF next_key IS NOT NULL AND NOT next_key = ANY(keyed) THEN
                    keyed := keyed || next_key;
                END IF;
                let_in := let_in + 1;
                future := future OR due_at > now_ts;
            END LOOP;
        END IF;
        IF NOT stop AND NOT future AND let_in < cap THEN
            due_at := NULL;
            SELECT id, "availableAt", "concurrencyKey" INTO next_id, next_at, next_key
            FROM "WorkerJob"
            WHERE "rateKey" = k AND status = 'PENDING' AND NOT "heldBack"
              AND COALESCE("waitingFor", 0) = 0 AND NOT (id = ANY(ids))
            ORDER BY priority DESC, "availableAt" ASC  -- the index's order: no sort
            LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                skipped := true;  -- none left, or another transaction holds them
            ELSE
                IF free > 0 THEN
                    due_at := greatest(next_at, fu);
                    free := free - 1;
                ELSIF cardinality(fa) > 0 THEN
                    due_at := greatest(next_at, fa[1]);
                    fc[1] := fc[1] - 1;
                    IF fc[1] = 0 THEN
                        fa := fa[2:];
                        fc := fc[2:];
                    END IF;
                END IF;
                IF due_at IS NOT NULL THEN
                    ids := ids || next_id;
                    ats := ats || due_at;
                    IF next_key IS NOT NULL AND NOT next_key = ANY(keyed) THEN
                        keyed := keyed || next_key;
                    END IF;
                    let_in := let_in + 1;
                END IF;
            END IF;
        END IF;
        IF cardinality(ids) > 0 THEN
            PERFORM set_config('skiplock.rating', 'on', true);
            UPDATE "WorkerJob" AS j
            SET "heldBack" = CASE WHEN j."concurrencyKey" IS NOT NULL THEN true END,
                "availableAt" = u.at
            FROM unnest(ids, ats) AS u(id, at)
            WHERE j.id = u.id;
        END IF;
        PERFORM set_config('skiplock.rating', COALESCE(outer_mark, ''), true);
        UPDATE "WorkerRateKey"
        SET "freeAt" = fa, "freeCount" = fc, "freedUpTo" = fu, "updatedAt" = now_ts
        WHERE key = k;
        -- A waiting job skipped because another transaction held its row: a note for
        -- the maintenance (skiplock_rate_wake).
        IF skipped AND let_in < cap AND EXISTS (
                SELECT FROM "WorkerJob"
                WHERE "rateKey" = k AND status = 'PENDING' AND NOT "heldBack"
                  AND COALESCE("waitingFor", 0) = 0) THEN
            INSERT INTO "WorkerRateToken" (key, "freeAt") VALUES (k, NULL);
        END IF;
        -- Jobs let in with a concurrency key now wait for a slot of it.
        FOR i IN 1 .. cardinality(keyed) LOOP
            PERFORM skiplock_fill_slots(keyed[i]);
        END LOOP;
    END $$
"""

_RATE_GATE = r"""
    CREATE FUNCTION skiplock_rate_gate() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        m text[];
        n bigint;
        secs bigint;
        in_before boolean;
        events text := current_setting('skiplock.rate_events', true);
    BEGIN
        -- Something for the key's next letting-in to look at (skiplock_rate_admit
        -- skips a key when nothing happened since it let its jobs in).
        IF COALESCE(current_setting('skiplock.rating', true), '') <> 'on' THEN
            PERFORM set_config('skiplock.rate_events',
                               (COALESCE(NULLIF(events, ''), '0')::bigint + 1)::text, true);
        END IF;
        IF TG_OP = 'INSERT' THEN
            IF NEW.rate IS NOT NULL THEN
                m := regexp_match(NEW.rate, '^\s*([0-9]{1,9})\s*/\s*([0-9]{0,6})\s*([smh])\s*$');
                IF m IS NOT NULL THEN
                    n := m[1]::bigint;
                    secs := COALESCE(NULLIF(m[2], '')::bigint, 1)
                            * CASE m[3] WHEN 's' THEN 1 WHEN 'm' THEN 60 ELSE 3600 END;
                END IF;
                IF m IS NULL OR n NOT BETWEEN 1 AND 1000000 OR secs NOT BETWEEN 1 AND 86400 THEN
                    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                        'invalid rate %L: write N/s, N/m, N/h or N/<k>s|m|h (10/m, 4/2s), '
                        'N from 1 to 1000000, a period from 1 second to 24 hours', NEW.rate);
                END IF;
                NEW.rate := n || '/' || secs || 's';
                NEW."rateKey" := COALESCE(NEW."rateKey", NEW.type::text);
            ELSE
                SELECT count || '/' || "periodS" || 's' INTO NEW.rate
                FROM "WorkerRateKey" WHERE key = NEW."rateKey";
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                        'rate key %L has no rate: give the job a rate (10/m)', NEW."rateKey");
                END IF;
            END IF;
            IF NEW.status = 'PENDING' THEN
                NEW."heldBack" := false;
            END IF;
            RETURN NEW;
        END IF;
        IF current_setting('skiplock.rating', true) = 'on' THEN
            RETURN COALESCE(NEW, OLD);
        END IF;
        in_before := OLD."rateKey" IS NOT NULL AND OLD.status = 'PENDING'
                     AND COALESCE(OLD."waitingFor", 0) = 0 AND OLD."heldBack" IS DISTINCT FROM false;
        IF TG_OP = 'DELETE' THEN
            -- Let in, and gone without a start: its token is free from its time on.
            PERFORM skiplock_rate_admit(OLD."rateKey", OLD."availableAt", false);
            RETURN OLD;
        END IF;
        IF OLD."rateKey" IS NOT NULL AND OLD.status = 'PENDING' AND NEW.status = 'PROCESSING' THEN
            -- A start: its token is free again one period after it.
            PERFORM skiplock_rate_admit(
                OLD."rateKey",
                greatest(statement_timestamp(), COALESCE(NEW."startedAt", statement_timestamp())),
                true);
        ELSIF in_before AND NOT (NEW.status = 'PENDING' AND NEW."heldBack" IS DISTINCT FROM false
                                 AND COALESCE(NEW."waitingFor", 0) = 0
                                 AND NEW."rateKey" IS NOT DISTINCT FROM OLD."rateKey") THEN
            PERFORM skiplock_rate_admit(OLD."rateKey", OLD."availableAt", false);
        END IF;
        IF NEW."rateKey" IS NULL OR NEW.status <> 'PENDING' THEN
            RETURN NEW;
        END IF;
        IF in_before
           AND COALESCE(OLD."waitingFor", 0) = 0
           AND OLD."rateKey" IS NOT DISTINCT FROM NEW."rateKey" THEN
            -- Let in: it keeps its token, and the time its token allows.
            IF NEW."heldBack" IS DISTINCT FROM false AND NEW."availableAt" < OLD."availableAt" THEN
                NEW."availableAt" := OLD."availableAt";
            END IF;
        ELSIF NEW."heldBack" IS DISTINCT FROM false THEN
            -- Wants a place in the queue without a token of its key: it waits for one.
            NEW."heldBack" := false;
        END IF;
        RETURN NEW;
    END $$
"""

_RATE_CHANGED = """
    CREATE FUNCTION skiplock_rate_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        old_in boolean := false;
        new_in boolean := false;
        new_waits boolean := false;
        old_waits boolean := false;
        n integer;
        secs integer;
        had_n integer;
        had_secs integer;
    BEGIN
        IF TG_OP <> 'INSERT' AND OLD."rateKey" IS NOT NULL AND OLD.status = 'PENDING'
           AND COALESCE(OLD."waitingFor", 0) = 0 THEN
            old_in := OLD."heldBack" IS DISTINCT FROM false;
            old_waits := NOT old_in;
        END IF;
        IF TG_OP <> 'DELETE' AND NEW."rateKey" IS NOT NULL AND NEW.status = 'PENDING'
           AND COALESCE(NEW."waitingFor", 0) = 0 THEN
            new_in := NEW."heldBack" IS DISTINCT FROM false;
            new_waits := NOT new_in;
        END IF;
        IF TG_OP = 'INSERT' THEN
            -- A key's rate is its latest enqueue's. No speculative insertion when the
            -- key's row is there (an ON CONFLICT DO UPDATE would lock it even
            -- unchanged), nor an update unless the rate changed.
            n := split_part(NEW.rate, '/', 1)::integer;
            secs := rtrim(split_part(NEW.rate, '/', 2), 's')::integer;
            SELECT count, "periodS" INTO had_n, had_secs FROM "WorkerRateKey"
            WHERE key = NEW."rateKey";
            IF NOT FOUND THEN
                INSERT INTO "WorkerRateKey" (key, count, "periodS")
                VALUES (NEW."rateKey", n, secs) ON CONFLICT (key) DO NOTHING;
            ELSIF (had_n, had_secs) IS DISTINCT FROM (n, secs) THEN
                UPDATE "WorkerRateKey" SET count = n, "periodS" = secs WHERE key = NEW."rateKey";
            END IF;
            IF new_waits THEN
                PERFORM skiplock_rate_admit(NEW."rateKey", NULL, false);
            END IF;
            RETURN NULL;
        END IF;
        IF current_setting('skiplock.rating', true) = 'on' THEN
            RETURN NULL;  -- skiplock_rate_admit's own changes: it counts them itself
        END IF;
        -- The gate recorded the tokens this row freed (a start, a job let in that left).
        IF TG_OP = 'DELETE'
           OR (OLD."rateKey" IS NOT NULL AND OLD.status = 'PENDING' AND NEW.status = 'PROCESSING')
           OR (old_in AND NOT (new_in AND NEW."rateKey" = OLD."rateKey")) THEN
            PERFORM skiplock_rate_admit(OLD."rateKey", NULL, false);
        END IF;
        IF new_waits AND NOT (old_waits AND NEW."rateKey" = OLD."rateKey"
                              AND NEW."availableAt" >= OLD."availableAt") THEN
            PERFORM skiplock_rate_admit(NEW."rateKey", NULL, false);
        END IF;
        RETURN NULL;
    END $$
"""

_RATE_WAKE = """
    CREATE FUNCTION skiplock_rate_wake() RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        k text;
        n integer := 0;
    BEGIN
        FOR k IN SELECT DISTINCT key FROM "WorkerRateToken" ORDER BY key
        LOOP
            PERFORM skiplock_rate_admit(k, NULL, true);
            n := n + 1;
        END LOOP;
        RETURN n;
    END $$
"""


def upgrade() -> None:
    # IF NOT EXISTS: the policies' migration adds the same two columns (either order).
    op.execute(
        """
        ALTER TABLE "WorkerJob"
            ADD COLUMN IF NOT EXISTS rate       text,
            ADD COLUMN IF NOT EXISTS "rateKey"  text
        """
    )
    op.execute(
        """
        CREATE TABLE "WorkerRateKey" (
            key         text          PRIMARY KEY,
            count       integer       NOT NULL CHECK (count >= 1),
            "periodS"   integer       NOT NULL CHECK ("periodS" >= 1),
            "freeAt"    timestamptz[] NOT NULL DEFAULT '{}',
            "freeCount" integer[]     NOT NULL DEFAULT '{}',
            "freedUpTo" timestamptz   NOT NULL DEFAULT '-infinity',
            "updatedAt" timestamptz   NOT NULL DEFAULT now()
        ) WITH (fillfactor = 50)
        """
    )
    # Tokens freed (and notes to look at a key again, "freeAt" NULL) that the key's
    # next letting-in folds into its row: written without its lock.
    op.execute(
        """
        CREATE TABLE "WorkerRateToken" (
            key      text        NOT NULL,
            "freeAt" timestamptz
        )
        """
    )
    op.execute('CREATE INDEX "WorkerRateToken_key_idx" ON "WorkerRateToken" (key)')
    op.execute(
        'CREATE INDEX "WorkerJob_rate_idx" ON "WorkerJob" '
        '("rateKey", "heldBack", priority DESC, "availableAt") '
        """WHERE status = 'PENDING' AND "rateKey" IS NOT NULL AND COALESCE("waitingFor", 0) = 0"""
    )
    op.execute(_RATE_ADMIT)
    op.execute(_RATE_GATE)
    op.execute(_RATE_CHANGED)
    op.execute(_RATE_WAKE)
    # Named after "WorkerJob_policy*": BEFORE triggers fire in name order, and the
    # policies' trigger may fill the rate first.
    op.execute(
        'CREATE TRIGGER "WorkerJob_rate_gate_inserted" BEFORE INSERT ON "WorkerJob" FOR EACH ROW '
        """WHEN (NEW.rate IS NOT NULL OR NEW."rateKey" IS NOT NULL)
        EXECUTE FUNCTION skiplock_rate_gate()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_rate_gate_updated" '
        'BEFORE UPDATE OF status, "heldBack", "rateKey", "availableAt", "waitingFor" '
        f"""ON "WorkerJob" FOR EACH ROW WHEN ({_PENDING_RATED})
        EXECUTE FUNCTION skiplock_rate_gate()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_rate_gate_deleted" BEFORE DELETE ON "WorkerJob" FOR EACH ROW '
        """WHEN (OLD."rateKey" IS NOT NULL AND OLD.status = 'PENDING'
                 AND OLD."heldBack" IS DISTINCT FROM false AND COALESCE(OLD."waitingFor", 0) = 0)
        EXECUTE FUNCTION skiplock_rate_gate()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_rate_inserted" AFTER INSERT ON "WorkerJob" FOR EACH ROW '
        """WHEN (NEW."rateKey" IS NOT NULL) EXECUTE FUNCTION skiplock_rate_changed()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_rate_updated" '
        'AFTER UPDATE OF status, "heldBack", "rateKey", "availableAt", "waitingFor" '
        f"""ON "WorkerJob" FOR EACH ROW WHEN ({_PENDING_RATED})
        EXECUTE FUNCTION skiplock_rate_changed()"""
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_rate_deleted" AFTER DELETE ON "WorkerJob" FOR EACH ROW '
        """WHEN (OLD."rateKey" IS NOT NULL AND OLD.status = 'PENDING'
                 AND OLD."heldBack" IS DISTINCT FROM false)
        EXECUTE FUNCTION skiplock_rate_changed()"""
    )


def downgrade() -> None:
    # An older skiplock knows nothing of rates: what waits for its window runs.
    op.execute(
        """UPDATE "WorkerJob" SET "heldBack" = CASE WHEN "concurrencyKey" IS NOT NULL THEN true END
           WHERE status = 'PENDING' AND "rateKey" IS NOT NULL AND NOT "heldBack"
             AND COALESCE("waitingFor", 0) = 0"""
    )
    for name in ("rate_deleted", "rate_updated", "rate_inserted", "rate_gate_deleted",
                 "rate_gate_updated", "rate_gate_inserted"):
        op.execute(f'DROP TRIGGER "WorkerJob_{name}" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_rate_wake()")
    op.execute("DROP FUNCTION skiplock_rate_changed()")
    op.execute("DROP FUNCTION skiplock_rate_gate()")
    op.execute("DROP FUNCTION skiplock_rate_admit(text, timestamptz, boolean)")
    op.execute('DROP INDEX "WorkerJob_rate_idx"')
    op.execute('DROP TABLE "WorkerRateToken"')
    op.execute('DROP TABLE "WorkerRateKey"')
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN IF EXISTS "rateKey", DROP COLUMN IF EXISTS rate')
