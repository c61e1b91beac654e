"""The dashboard's action log, and an index that keeps FAILED rows cheap to count.

Revision ID: 0010_dashboard
Revises: 0004_prisma_types

- "DashboardAction": one row per action taken from `skiplock dashboard`
  (retry, run now, pause, resume...): who (the authenticated user and the
  address the request came from), what (the action and its target), when
  (the database clock), and how many jobs it touched. It is written in the
  transaction of the action itself, so an action is never done unlogged nor
  logged undone.
- "WorkerJob_failed_idx": a partial index over FAILED rows. skiplock's own
  life cycle never writes FAILED, so the index is empty and costs a write
  nothing, but without it every `count(*) ... WHERE status = 'FAILED'`
  (`skiplock stats`, the dashboard's overview) is a sequential scan of the
  whole table, which grows with every finished job (docs/benchmarks.md,
  "Figures behind the code"). Ordered by "completedAt"
  like the finished index, so a listing of FAILED jobs pages the same way.
"""

from __future__ import annotations

from alembic import op

revision = "0010_dashboard"
down_revision = "0004_prisma_types"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE "DashboardAction" (
            id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at       timestamptz NOT NULL DEFAULT now(),
            who      text        NOT NULL,
            address  text,
            action   text        NOT NULL,
            target   text        NOT NULL,
            affected integer     NOT NULL,
            detail   jsonb
        )
        """
    )
    op.execute('CREATE INDEX "DashboardAction_target_idx" ON "DashboardAction" (target, at)')
    op.execute(
        'CREATE INDEX IF NOT EXISTS "WorkerJob_failed_idx" ON "WorkerJob" ("completedAt") '
        "WHERE status = 'FAILED'"
    )


def downgrade() -> None:
    op.execute('DROP INDEX IF EXISTS "WorkerJob_failed_idx"')
    op.execute('DROP TABLE "DashboardAction"')
