"""Attempt accounting: count a job's free interruptions; date enqueues by their statement.

Revision ID: 0007_accounting
Revises: 0010_dashboard
Create Date: 2026-12-01

- `"interruptions"` (nullable: rows written before this migration, or by the
  original TypeScript service, mean none) counts the runs of a job that were cut short by
  something other than the job itself (a lost connection, a pool shutdown, a
  dead host) and were not charged an attempt. Only the first few are free
  (`queue_core/accounting.py`), so a job runs at most `maxAttempts` + that many
  times in all.
- `"createdAt"` and `"availableAt"` default to `statement_timestamp()`: an
  INSERT at the end of a long transaction is dated when it runs, not when its
  transaction began (`now()`), so a job enqueued with a delay at the end of a
  five-minute job is not due at once, ahead of older jobs.
"""

from alembic import op

revision = "0007_accounting"
down_revision = "0010_dashboard"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" ADD COLUMN IF NOT EXISTS interruptions integer')
    op.execute('ALTER TABLE "WorkerJob" ALTER COLUMN "createdAt" SET DEFAULT statement_timestamp()')
    op.execute(
        'ALTER TABLE "WorkerJob" ALTER COLUMN "availableAt" SET DEFAULT statement_timestamp()'
    )


def downgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" ALTER COLUMN "availableAt" SET DEFAULT now()')
    op.execute('ALTER TABLE "WorkerJob" ALTER COLUMN "createdAt" SET DEFAULT now()')
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN IF EXISTS interruptions')
