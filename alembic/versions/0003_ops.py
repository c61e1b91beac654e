"""What operators need beside the job table: paused types, the process table, schedules.

Revision ID: 0003_ops
Revises: 0002_domain

- "WorkerJobPause": one row per paused job type; `skiplock pause` / `resume`
  write it. The claim asks `skiplock_type_paused(type)` of each candidate row
  while it walks its partial index. A plpgsql function on purpose: the planner
  cannot inline it, so it costs it at a fixed selectivity. Written as a join
  or as `type <> ALL(ARRAY(SELECT ...))`, the planner estimated that almost no
  row survives when one type fills the queue (a backfill) and chose a
  sequential scan and a sort of every pending row, whose cost grows with the
  backlog (docs/lessons.md, the claim's index; the figures: docs/benchmarks.md,
  "Figures behind the code").
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
        CREATE FUNCTION skiplock_type_paused(job_type text) RETURNS boolean
        LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
        BEGIN
            RETURN EXISTS (SELECT 1 FROM "WorkerJobPause" WHERE type = job_type);
        END $$
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
    op.execute("DROP FUNCTION skiplock_type_paused(text)")
    op.execute('DROP TABLE "WorkerJobPause"')
