"""Dependencies between jobs (fan-in) and batches with a callback.

Revision ID: 0016_dependencies
Revises: 0015_trace_context
Create Date: 2026-12-06

A job may wait for other jobs, its *parents*, to end (`enqueue(...,
depends_on=[...])`, queue_core/features/dependencies.py), and a batch groups
jobs so that one callback job runs once the last of them ended
(`skiplock.batch`, queue_core/features/batches.py). No resolver process: the
statement that ends a parent makes its last-waiting dependents ready in its
own transaction, so a dependent is claimable from that commit on.

- "WorkerJobDependency" (parent, child, policy, "resolvedAt"): one row per
  edge. `policy` says what a parent that does not complete (dead-lettered,
  cancelled, deleted) does to the child: `cancel` it (the default: FAILED,
  its "lastError" naming the parent, and its own dependents after it),
  `run` it anyway (the edge counts as done), or `hold` it (it keeps waiting,
  with a note in "lastError", until the parent completes after a retry or a
  person releases it). "resolvedAt" is set once the parent's end was applied
  to the edge, so a parent that is dead-lettered, retried and then completes
  counts once. No foreign keys: every UPDATE and DELETE of "WorkerJob" would
  queue a referential check, and cleanup's deletes a probe of this table per
  row; the triggers below keep the edges of the jobs that have some.
- "WorkerJob"."waitingFor": NULL for a job enqueued without parents, else how
  many of its parents it still waits for. "WorkerJob"."hasDependents": some
  job depends on this one; the trigger that applies a parent's end fires only
  for such rows (its WHEN reads one column of OLD).
- A dependent that waits is PENDING with "heldBack" = false: out of the
  claim's partial index, as held-back and parked rows are (`"heldBack" IS
  NULL`), so the claim does not change, never joins the edges, and walks over
  no waiting row. false is neither of the values the other features use: a
  parked job (0012) is `"heldBack"` true without a key, a keyed job waiting
  for a slot (0005, 0013) is true with one; the slot triggers count holders
  by `"heldBack" IS NULL` and let in only rows that are true, so a waiting
  dependent holds no slot and is let in by none. When its count reaches 0
  "heldBack" becomes NULL: in the claim's index, and for a keyed job a slot
  holder that `skiplock_fill_slots` balances as it does a job let in by hand.
  No new "JobStatus" value: the original service's Prisma client reads every
  row, both columns are nullable.
- `skiplock_resolve_edges(parent, status, only)`: applies a parent's end to
  its unresolved edges (only those to `only`, when given: an enqueue whose
  parent had already ended), children in id order (two parents' ends lock
  shared children in one order). A cancelled child's own dependents are
  handled in the same call, from a work list, not by the trigger recursing
  (a chain of a thousand would exhaust the server's stack); the
  transaction-local setting `skiplock.resolving` tells the trigger to stand
  aside meanwhile. A child made ready wakes idle workers (NOTIFY
  skiplock_jobs, sent at the commit).
- `WorkerJob_parent_ended`, AFTER UPDATE OF status, WHEN (OLD."hasDependents"):
  a job that has dependents and moved to COMPLETED, DEAD_LETTER or FAILED.
  Other updates pay the evaluation of that WHEN alone.
- `WorkerJob_dependency_deleted`, AFTER DELETE of a row that has edges: an
  unfinished parent deleted counts as one that did not complete; its edges,
  and a deleted child's, go. `WorkerJob_dependency_truncated` empties both
  tables after a TRUNCATE of "WorkerJob".
- "WorkerBatch" (id, "idempotencyKey", "callbackId", "onComplete",
  "onFailure", total, counts, "createdAt", "endedAt"): a batch's callback is a
  job that depends on every member with the policy `run`, so it becomes ready
  exactly once, when the last member ended, by the same mechanism.
  `skiplock_batch_ready(callback)`, called when a child becomes ready, counts
  the members' ends, records them on the batch, and turns the callback into
  `onFailure` (some member did not complete, and the batch has one) or
  `onComplete`, the counts in its payload's "batch" object.
- "WorkerJob_waiting_idx" over the waiting dependents only: `skiplock stats`
  counts them, the chaos soak looks for stranded ones.
"""

from __future__ import annotations

from alembic import op

revision = "0016_dependencies"
down_revision = "0015_trace_context"
branch_labels = None
depends_on = None

# What a parent's end did, as a cancelled or held child's "lastError" says it.
_HOW = """CASE st WHEN 'DEAD_LETTER' THEN 'was dead-lettered'
                  WHEN 'FAILED' THEN 'was cancelled'
                  ELSE 'was deleted before it ended' END"""

_RESOLVE_EDGES = f"""
    CREATE FUNCTION skiplock_resolve_edges(p text, p_status text, only_children text[])
    RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        parents text[] := ARRAY[p];
        states text[] := ARRAY[p_status];
        i integer := 1;
        cur text;
        st text;
        c text;
        pol text;
        ready boolean;
        deps boolean;
        ended text;
        readied integer := 0;
        outer_mark text := current_setting('skiplock.resolving', true);
    BEGIN
        -- The status changes below fire this table's trigger again: it stands aside,
        -- and what it would do is done here, from the work list.
        PERFORM set_config('skiplock.resolving', 'on', true);
        WHILE i <= cardinality(parents) LOOP
            cur := parents[i];
            st := states[i];
            FOR c, pol IN
                WITH r AS (
                    UPDATE "WorkerJobDependency" SET "resolvedAt" = statement_timestamp()
                    WHERE parent = cur AND "resolvedAt" IS NULL
                      AND (i > 1 OR only_children IS NULL OR child = ANY(only_children))
                      AND (st = 'COMPLETED' OR policy <> 'hold')
                    RETURNING child, policy)
                SELECT r.child, r.policy FROM r ORDER BY r.child
            LOOP
                ready := NULL;
                deps := NULL;
                IF st = 'COMPLETED' OR pol = 'run' THEN
                    UPDATE "WorkerJob"
                    SET "waitingFor" = "waitingFor" - 1,
                        "heldBack" = CASE WHEN "waitingFor" > 1 THEN false END
                    WHERE id = c AND status = 'PENDING' AND NOT "heldBack"
                    RETURNING "heldBack" IS NULL INTO ready;
                    IF ready THEN
                        readied := readied + 1;
                        ended := skiplock_batch_ready(c);
                        IF ended IS NOT NULL THEN
                            parents := parents || c;
                            states := states || ended;
                        END IF;
                    END IF;
                ELSE
                    UPDATE "WorkerJob"
                    SET status = 'FAILED', "heldBack" = NULL,
                        "completedAt" = statement_timestamp(),
                        "cancelledBy" = 'parent ' || cur,
                        "lastError" = format('cancelled: it depends on job %s, which %s '
                                             '(policy cancel)', cur, {_HOW})
                    WHERE id = c AND status = 'PENDING' AND NOT "heldBack"
                    RETURNING "hasDependents" INTO deps;
                    IF deps THEN
                        parents := parents || c;
                        states := states || 'FAILED'::text;
                    END IF;
                END IF;
            END LOOP;
            IF st <> 'COMPLETED' THEN
                -- Held: the edge stays unresolved, so the child waits until this
                -- parent completes (after a retry) or a person releases it.
                FOR c IN
                    SELECT d.child FROM "WorkerJobDependency" AS d
                    WHERE d.parent = cur AND d."resolvedAt" IS NULL AND d.policy = 'hold'
                      AND (i > 1 OR only_children IS NULL OR d.child = ANY(only_children))
                    ORDER BY d.child
                LOOP
                    UPDATE "WorkerJob"
                    SET "lastError" = format('held: it depends on job %s, which %s (policy '
                                             'hold); it runs once that job completes after a '
                                             'retry, or now with `skiplock retry %s`',
                                             cur, {_HOW}, c)
                    WHERE id = c AND status = 'PENDING' AND NOT "heldBack";
                END LOOP;
            END IF;
            i := i + 1;
        END LOOP;
        PERFORM set_config('skiplock.resolving', COALESCE(outer_mark, ''), true);
        IF readied > 0 THEN
            PERFORM pg_notify('skiplock_jobs', '');
        END IF;
        RETURN readied;
    END $$
"""

_BATCH_READY = """
    CREATE FUNCTION skiplock_batch_ready(c text) RETURNS text
    LANGUAGE plpgsql AS $$
    DECLARE
        b "WorkerBatch"%ROWTYPE;
        n_completed integer;
        n_dead integer;
        n_cancelled integer;
        tally jsonb;
        chosen jsonb;
    BEGIN
        SELECT * INTO b FROM "WorkerBatch" WHERE "callbackId" = c;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        -- Every member ended: the last one's end is this transaction's, the others
        -- committed before it (each decremented the callback's row under its lock).
        SELECT count(*) FILTER (WHERE j.status = 'COMPLETED'),
               count(*) FILTER (WHERE j.status = 'DEAD_LETTER'),
               count(*) FILTER (WHERE j.status = 'FAILED')
        INTO n_completed, n_dead, n_cancelled
        FROM "WorkerJobDependency" AS d JOIN "WorkerJob" AS j ON j.id = d.parent
        WHERE d.child = c;
        tally := jsonb_build_object(
            'id', b.id, 'total', b.total, 'completed', n_completed, 'deadLettered', n_dead,
            'cancelled', n_cancelled,
            'deleted', greatest(b.total - n_completed - n_dead - n_cancelled, 0));
        UPDATE "WorkerBatch" SET counts = tally, "endedAt" = statement_timestamp()
        WHERE id = b.id;
        chosen := CASE WHEN n_completed < b.total AND b."onFailure" IS NOT NULL
                       THEN b."onFailure" ELSE b."onComplete" END;
        IF chosen IS NULL THEN
            -- Only an on_failure callback, and every member completed: nothing to run.
            UPDATE "WorkerJob"
            SET status = 'COMPLETED', "completedAt" = statement_timestamp(),
                result = jsonb_build_object('batch', tally,
                                            'callback', 'none: every member completed')
            WHERE id = c;
            RETURN 'COMPLETED';
        END IF;
        UPDATE "WorkerJob"
        SET type = chosen ->> 'type',
            payload = COALESCE(chosen -> 'payload', '{}'::jsonb)
                      || jsonb_build_object('batch', tally)
        WHERE id = c;
        RETURN NULL;
    END $$
"""

_PARENT_ENDED = """
    CREATE FUNCTION skiplock_parent_ended() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status IN ('PENDING', 'PROCESSING') OR OLD.status = NEW.status
           OR current_setting('skiplock.resolving', true) = 'on' THEN
            RETURN NULL;
        END IF;
        PERFORM skiplock_resolve_edges(NEW.id, NEW.status::text, NULL);
        RETURN NULL;
    END $$
"""

_DEPENDENCY_DELETED = """
    CREATE FUNCTION skiplock_dependency_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD."hasDependents" THEN
            IF OLD.status IN ('PENDING', 'PROCESSING') THEN
                PERFORM skiplock_resolve_edges(OLD.id, 'DELETED', NULL);
            END IF;
            DELETE FROM "WorkerJobDependency" WHERE parent = OLD.id;
        END IF;
        IF OLD."waitingFor" IS NOT NULL THEN
            DELETE FROM "WorkerJobDependency" WHERE child = OLD.id;
            DELETE FROM "WorkerBatch" WHERE "callbackId" = OLD.id;
        END IF;
        RETURN NULL;
    END $$
"""


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE "WorkerJob"
            ADD COLUMN "waitingFor"    integer CHECK ("waitingFor" >= 0),
            ADD COLUMN "hasDependents" boolean
        """
    )
    op.execute(
        """
        CREATE TABLE "WorkerJobDependency" (
            parent       text        NOT NULL,
            child        text        NOT NULL,
            policy       text        NOT NULL DEFAULT 'cancel'
                                     CHECK (policy IN ('cancel', 'run', 'hold')),
            "resolvedAt" timestamptz,
            PRIMARY KEY (parent, child),
            CHECK (parent <> child)
        )
        """
    )
    op.execute('CREATE INDEX "WorkerJobDependency_child_idx" ON "WorkerJobDependency" (child)')
    op.execute(
        """
        CREATE TABLE "WorkerBatch" (
            id               text        PRIMARY KEY,
            "idempotencyKey" text        UNIQUE,
            "callbackId"     text        NOT NULL UNIQUE,
            "onComplete"     jsonb,
            "onFailure"      jsonb,
            total            integer     NOT NULL CHECK (total >= 0),
            counts           jsonb,
            "createdAt"      timestamptz NOT NULL DEFAULT now(),
            "endedAt"        timestamptz
        )
        """
    )
    op.execute(
        'CREATE INDEX "WorkerJob_waiting_idx" ON "WorkerJob" (type) '
        """WHERE status = 'PENDING' AND NOT "heldBack" """
    )
    op.execute(_BATCH_READY)
    op.execute(_RESOLVE_EDGES)
    op.execute(_PARENT_ENDED)
    op.execute(
        'CREATE TRIGGER "WorkerJob_parent_ended" AFTER UPDATE OF status ON "WorkerJob" '
        """FOR EACH ROW WHEN (OLD."hasDependents") EXECUTE FUNCTION skiplock_parent_ended()"""
    )
    op.execute(_DEPENDENCY_DELETED)
    op.execute(
        'CREATE TRIGGER "WorkerJob_dependency_deleted" AFTER DELETE ON "WorkerJob" FOR EACH ROW '
        """WHEN (OLD."hasDependents" OR OLD."waitingFor" IS NOT NULL)
        EXECUTE FUNCTION skiplock_dependency_deleted()"""
    )
    op.execute(
        """
        CREATE FUNCTION skiplock_dependency_truncated() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- No job is left to wait or to be waited for. DELETE, not TRUNCATE: a
            -- TRUNCATE that names these tables too is still using them here.
            DELETE FROM "WorkerJobDependency";
            DELETE FROM "WorkerBatch";
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        'CREATE TRIGGER "WorkerJob_dependency_truncated" AFTER TRUNCATE ON "WorkerJob" '
        "FOR EACH STATEMENT EXECUTE FUNCTION skiplock_dependency_truncated()"
    )


def downgrade() -> None:
    # An older skiplock knows nothing of waiting: what waits runs.
    op.execute("""UPDATE "WorkerJob" SET "heldBack" = NULL WHERE NOT "heldBack" """)
    op.execute('DROP TRIGGER "WorkerJob_dependency_truncated" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_dependency_deleted" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_parent_ended" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_dependency_truncated()")
    op.execute("DROP FUNCTION skiplock_dependency_deleted()")
    op.execute("DROP FUNCTION skiplock_parent_ended()")
    op.execute("DROP FUNCTION skiplock_resolve_edges(text, text, text[])")
    op.execute("DROP FUNCTION skiplock_batch_ready(text)")
    op.execute('DROP INDEX "WorkerJob_waiting_idx"')
    op.execute('DROP TABLE "WorkerBatch"')
    op.execute('DROP TABLE "WorkerJobDependency"')
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN "waitingFor", DROP COLUMN "hasDependents"')
