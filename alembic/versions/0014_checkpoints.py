"""Checkpoints: a small JSON cursor that a long job's next run resumes from.

Revision ID: 0014_checkpoints
Revises: 0013_slot_counts
Create Date: 2026-12-08

`"checkpoint"` (jsonb, nullable: NULL means the job never checkpointed, and
rows written by other producers have none) holds what the handler last passed
to `skiplock.checkpoint(state)`, at most 8 KiB of JSON (queue_core/features/
checkpoints.py). The master writes it with its heartbeats and when it settles
a run its child did not finish, the child when it fails or snoozes the job;
the claim hands it to the next run. A completion clears it; a retry of a dead
letter keeps it. Adding a nullable column without a default changes only the
catalog: no row is rewritten, and the lock is held for an instant.
"""

from alembic import op

revision = "0014_checkpoints"
down_revision = "0013_slot_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" ADD COLUMN IF NOT EXISTS checkpoint jsonb')


def downgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN IF EXISTS checkpoint')
