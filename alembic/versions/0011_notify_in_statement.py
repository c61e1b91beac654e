"""skiplock's inserts send their own NOTIFY; the table's trigger notifies only for the others.

Revision ID: 0011_notify_in_statement
Revises: 0005_features
Create Date: 2026-12-02

An insert wakes idle workers with a NOTIFY on `skiplock_jobs`. Until now the
statement-level trigger "WorkerJob_notify" sent it, for every insert: a
PL/pgSQL call per statement (the trigger queue, the function's executor, the
`PERFORM pg_notify(...)` inside it), a measurable part of a one-row insert
(docs/benchmarks.md, "Figures behind the code").
skiplock's own insert statements now carry `NOTIFY skiplock_jobs` in the same
query string (queue_core/sql.py `WAKE`): one simple query is one transaction,
so the notification still goes out at the commit and never for a rollback.

The trigger stays for producers that insert rows themselves (the original
TypeScript service through Prisma, a script in psql), with a WHEN that keeps it from
firing when the statement's query string already notifies: `current_query()`
is the text the client sent, evaluated once per statement. A query string that
merely mentions the NOTIFY (a payload inlined into a foreign producer's SQL)
skips the trigger and leaves its rows to the workers' polling, as with
`--no-listen`: nothing is lost, the pick-up waits at most `--poll-max`.

An older skiplock that still enqueues against this schema keeps its wake-ups:
its statements do not carry the NOTIFY, so the trigger fires for them.
"""

from alembic import op

revision = "0011_notify_in_statement"
down_revision = "0005_features"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_notify" ON "WorkerJob"')
    op.execute(
        """
        CREATE TRIGGER "WorkerJob_notify" AFTER INSERT ON "WorkerJob" FOR EACH STATEMENT
        WHEN (COALESCE(strpos(current_query(), 'NOTIFY skiplock_jobs'), 0) = 0)
        EXECUTE FUNCTION skiplock_notify_jobs()
        """
    )


def downgrade() -> None:
    op.execute('DROP TRIGGER "WorkerJob_notify" ON "WorkerJob"')
    op.execute(
        'CREATE TRIGGER "WorkerJob_notify" AFTER INSERT ON "WorkerJob" '
        "FOR EACH STATEMENT EXECUTE FUNCTION skiplock_notify_jobs()"
    )
