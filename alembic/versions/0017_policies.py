"""Per-type policies in the database, applied to every inserted job by a trigger.

Revision ID: 0017_policies
Revises: 0016_dependencies
Create Date: 2026-12-06

A type's defaults (`@handler(TYPE, concurrency=, concurrency_key=,
max_attempts=, backoff=, rate=, rate_key=)`) used to apply only at
`skiplock.enqueue`, in a process that had imported the handler module: a row
written by the seed's Prisma client, by psql or by another language got none
of them (no concurrency key, so the built-in "one DETECT_PATTERNS per user at
a time" did not hold for the very producer it was written for).

- "WorkerTypePolicy" (type, "concurrencyLimit", "concurrencyKeyField",
  "maxAttempts", backoff, "uniqueFor", rate, "rateKeyField", source,
  "updatedAt", "updatedBy"): one row per type that has a default. A pool's
  master writes its handlers' options at boot and on HUP
  (queue_core/features/type_policies.py), `skiplock policy set` writes an
  operator's. `source` says which: 'boot' or 'operator'. A boot never
  changes an operator's row: the operator's values hold until `skiplock
  policy reset` deletes the row (the next boot writes the registered values
  again). The table is small (one row per type) and read by primary key.
- `skiplock_apply_policy()`, BEFORE INSERT FOR EACH ROW on "WorkerJob", as
  trigger "WorkerJob_00_policy": the name sorts before any other BEFORE
  INSERT trigger (they fire in name order), so a later feature's trigger
  (rates, sequences) sees the row with its policy applied; the slot triggers
  are AFTER INSERT and see the key it set. It fills only what the row leaves
  unset, so explicit values win:
  * no "concurrencyKey": the key `TYPE:payload->>field` (or `TYPE` without a
    field), as `skiplock.enqueue` builds it, with the type's limit, and the
    row held back ("heldBack" true unless the producer set it: a dependent
    waiting for its parents keeps false) for the slot triggers to let in; a
    payload without the field is not limited. A key given without a limit
    gets the type's.
  * "maxAttempts": NULL, or the column's default, 3, from a producer that is
    not skiplock, counts as not given and becomes the type's. A NULL default
    would not tell a Prisma row apart: the seed's Prisma client sends its
    schema's @default(3) explicitly, so a 3 from Prisma or psql gives way to
    a policy. skiplock's own inserts carry a mark (`/*skiplock*/` in their
    text, or the `NOTIFY skiplock_jobs` that leads the EXECUTE of their
    prepared form), which the statement trigger below records once per
    statement in `skiplock.own_statement`: `skiplock.enqueue` resolves
    max_attempts itself (queue_core/features/type_policies.py), so its 3 is
    a 3 that was given.
  * "uniqueFor": an "idempotencyKey" of the row becomes its scoped key
    ("uniqueKey", "uniqueUntil" = now + the window, or NULL for 'active'),
    after freeing that key on rows whose window is over, as
    queue_core/features/unique.py does before an enqueue.
  * rate: "rate" and "rateKey" (`TYPE:payload->>field`, or `TYPE`) when the
    row has no "rate"; what a rate means is the rates feature's trigger's.
  A type without a row costs one primary-key probe of a small table per
  statement, not per row: the first row's probe records the type in the
  transaction-local setting `skiplock.no_policy`, which the next rows read
  (a probe per row cost an `enqueue_many` of 10,000 rows about 40 % more);
  `skiplock_policy_statement()`, BEFORE INSERT FOR EACH STATEMENT (trigger
  "WorkerJob_00_policy_statement"), clears it as each statement starts.
- "WorkerJob".rate and "rateKey" (nullable text), added IF NOT EXISTS: the
  rates feature adds the same two columns.

A callable `concurrency_key` or `backoff` cannot be stored: such a type's
limit (or backoff) applies at Python enqueue (or in the worker) only.
"""

from __future__ import annotations

from alembic import op

revision = "0017_policies"
down_revision = "0016_dependencies"
branch_labels = None
depends_on = None

_TABLE = """
    CREATE TABLE "WorkerTypePolicy" (
        type                  text PRIMARY KEY CHECK (length(type) BETWEEN 1 AND 200),
        "concurrencyLimit"    integer CHECK ("concurrencyLimit" BETWEEN 1 AND 10000),
        "concurrencyKeyField" text CHECK ("concurrencyKeyField" <> ''),
        "maxAttempts"         integer CHECK ("maxAttempts" BETWEEN 1 AND 1000),
        backoff               jsonb CHECK (backoff IS NULL
                                           OR jsonb_typeof(backoff) IN ('number', 'array')),
        "uniqueFor"           text CHECK ("uniqueFor" = 'active'
                                          OR "uniqueFor" ~ '^[0-9]+(\\.[0-9]+)?$'),
        rate                  text CHECK (rate ~ '^[1-9][0-9]*/[1-9][0-9]*s$'),
        "rateKeyField"        text CHECK ("rateKeyField" <> ''),
        source                text NOT NULL DEFAULT 'boot'
                                   CHECK (source IN ('boot', 'operator')),
        "updatedAt"           timestamptz NOT NULL DEFAULT now(),
        "updatedBy"           text,
        CHECK ("concurrencyKeyField" IS NULL OR "concurrencyLimit" IS NOT NULL),
        CHECK ("rateKeyField" IS NULL OR rate IS NOT NULL)
    )
"""

_APPLY = """
    CREATE FUNCTION skiplock_apply_policy() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        p "WorkerTypePolicy"%ROWTYPE;
        v text;
    BEGIN
        -- The statement's rows of a type without a policy: no probe after the first.
        IF current_setting('skiplock.no_policy', true) = NEW.type THEN
            IF NEW."maxAttempts" IS NULL THEN
                NEW."maxAttempts" := 3;
            END IF;
            RETURN NEW;
        END IF;
        SELECT * INTO p FROM "WorkerTypePolicy" WHERE type = NEW.type;
        IF NOT FOUND THEN
            PERFORM set_config('skiplock.no_policy', NEW.type, true);
            IF NEW."maxAttempts" IS NULL THEN
                NEW."maxAttempts" := 3;
            END IF;
            RETURN NEW;
        END IF;
        IF p."concurrencyLimit" IS NOT NULL THEN
            IF NEW."concurrencyKey" IS NULL THEN
                IF p."concurrencyKeyField" IS NULL THEN
                    NEW."concurrencyKey" := NEW.type;
                ELSE
                    v := NEW.payload ->> p."concurrencyKeyField";
                    IF v IS NOT NULL THEN
                        NEW."concurrencyKey" := NEW.type || ':' || v;
                    END IF;
                END IF;
                IF NEW."concurrencyKey" IS NOT NULL THEN
                    NEW."concurrencyLimit" := COALESCE(NEW."concurrencyLimit",
                                                       p."concurrencyLimit");
                    IF NEW."heldBack" IS NULL THEN
                        NEW."heldBack" := true;
                    END IF;
                END IF;
            ELSIF NEW."concurrencyLimit" IS NULL THEN
                NEW."concurrencyLimit" := p."concurrencyLimit";
            END IF;
        END IF;
        IF NEW."maxAttempts" IS NULL THEN
            NEW."maxAttempts" := COALESCE(p."maxAttempts", 3);
        ELSIF NEW."maxAttempts" = 3 AND p."maxAttempts" IS NOT NULL
              AND current_setting('skiplock.own_statement', true) IS DISTINCT FROM 'on' THEN
            NEW."maxAttempts" := p."maxAttempts";
        END IF;
        IF p."uniqueFor" IS NOT NULL AND NEW."idempotencyKey" IS NOT NULL
           AND NEW."uniqueKey" IS NULL THEN
            UPDATE "WorkerJob" SET "uniqueKey" = NULL
            WHERE "uniqueKey" = NEW."idempotencyKey"
              AND CASE WHEN "uniqueUntil" IS NULL THEN status NOT IN ('PENDING', 'PROCESSING')
                       ELSE "uniqueUntil" <= now() END;
            NEW."uniqueKey" := NEW."idempotencyKey";
            NEW."idempotencyKey" := NULL;
            NEW."uniqueUntil" := CASE WHEN p."uniqueFor" = 'active' THEN NULL
                                      ELSE statement_timestamp()
                                           + make_interval(secs => p."uniqueFor"::float8) END;
        END IF;
        IF p.rate IS NOT NULL AND NEW.rate IS NULL THEN
            IF NEW."rateKey" IS NULL THEN
                IF p."rateKeyField" IS NULL THEN
                    NEW."rateKey" := NEW.type;
                ELSE
                    v := NEW.payload ->> p."rateKeyField";
                    IF v IS NOT NULL THEN
                        NEW."rateKey" := NEW.type || ':' || v;
                    END IF;
                END IF;
            END IF;
            IF NEW."rateKey" IS NOT NULL THEN
                NEW.rate := p.rate;
            END IF;
        END IF;
        RETURN NEW;
    END $$
"""


# Each INSERT statement starts with no type known to lack a policy (a policy written
# since the last statement applies to the next one), and says once whether it is
# skiplock's own: its text, or the NOTIFY before the EXECUTE of its prepared form,
# carries a mark (queue_core/sql.py).
_FORGET = """
    CREATE FUNCTION skiplock_policy_statement() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        q text := current_query();
    BEGIN
        PERFORM set_config('skiplock.no_policy', '', true);
        PERFORM set_config('skiplock.own_statement',
                           CASE WHEN strpos(q, '/*skiplock*/') > 0
                                  OR strpos(q, 'NOTIFY skiplock_jobs') > 0
                                THEN 'on' ELSE '' END, true);
        RETURN NULL;
    END $$
"""


def upgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" ADD COLUMN IF NOT EXISTS rate text, '
               'ADD COLUMN IF NOT EXISTS "rateKey" text')
    op.execute(_TABLE)
    op.execute(_APPLY)
    op.execute('CREATE TRIGGER "WorkerJob_00_policy" BEFORE INSERT ON "WorkerJob" '
               "FOR EACH ROW EXECUTE FUNCTION skiplock_apply_policy()")
    op.execute(_FORGET)
    op.execute('CREATE TRIGGER "WorkerJob_00_policy_statement" BEFORE INSERT ON "WorkerJob" '
               "FOR EACH STATEMENT EXECUTE FUNCTION skiplock_policy_statement()")


def downgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_00_policy_statement" ON "WorkerJob"')
    op.execute('DROP TRIGGER "WorkerJob_00_policy" ON "WorkerJob"')
    op.execute("DROP FUNCTION skiplock_policy_statement()")
    op.execute("DROP FUNCTION skiplock_apply_policy()")
    op.execute('DROP TABLE "WorkerTypePolicy"')
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN IF EXISTS rate, '
               'DROP COLUMN IF EXISTS "rateKey"')
