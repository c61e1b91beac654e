"""What operators need beside the job table: paused types, the process table, schedules.

Revision ID: 0003_ops
Revises: 0002_domain

- "WorkerJobPause": one row per paused job type. The claim skips pending jobs
  of a paused type (an anti-join on this tiny table, evaluated per candidate
  row while the claim walks its partial index, so the index still gives the
  order); `skiplock pause` / `resume` write it.
- "WorkerProcess": the live masters and their children, kept fresh by every
  master's heartbeat (`skiplock ps`). A child row belongs to its master and
  goes with it (ON DELETE CASCADE), so pruning a dead host is one DELETE of
  its master rows. UNLOGGED: it is rebuilt within a heartbeat after a crash,
  and its constant updates should not flood the WAL or the replicas.
- "WorkerSchedule": how far each recurring schedule has been enqueued, so a
  master that starts (or a host that comes back) catches up from there, within
  a bounded window, instead of from the retention of the job table.
"""

from __future__ import annotations

from alembic import op

revision = "0003_ops"
down_revision = "0002_domain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE "WorkerJobPause" (
            type       text        PRIMARY KEY,
            "pausedAt" timestamptz NOT NULL DEFAULT now(),
            "pausedBy" text,
            reason     text
        )
        """
    )
    op.execute(
        """
        CREATE UNLOGGED TABLE "WorkerProcess" (
            id             text        PRIMARY KEY,
            kind           text        NOT NULL CHECK (kind IN ('master', 'child')),
            "masterId"     text        REFERENCES "WorkerProcess"(id) ON DELETE CASCADE,
            host           text        NOT NULL,
            pid            integer     NOT NULL,
            "slot"         integer,
            state          text,
            concurrency    integer,
            "startedAt"    timestamptz NOT NULL,
            "heartbeatAt"  timestamptz NOT NULL DEFAULT now(),
            "jobId"        text,
            "jobType"      text,
            "jobStartedAt" timestamptz,
            CHECK ((kind = 'master') = ("masterId" IS NULL))
        ) WITH (fillfactor = 50)
        """
    )
    op.execute('CREATE INDEX "WorkerProcess_masterId_idx" ON "WorkerProcess" ("masterId")')
    op.execute(
        """
        CREATE TABLE "WorkerSchedule" (
            name              text        PRIMARY KEY,
            "lastOccurrence"  timestamptz NOT NULL,
            "updatedAt"       timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute('DROP TABLE "WorkerSchedule"')
    op.execute('DROP TABLE "WorkerProcess"')
    op.execute('DROP TABLE "WorkerJobPause"')
