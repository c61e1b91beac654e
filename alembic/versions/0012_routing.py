"""Routing: what each live pool serves, and jobs parked while no pool serves their type.

Revision ID: 0012_routing
Revises: 0011_notify_in_statement
Create Date: 2026-12-04

A pool claims only the job types it serves (pool/served.py); a job of any
other type stays PENDING, untouched, until a pool that serves its type runs.

- "WorkerProcess".served: the job types a master serves, written with its
  heartbeat. `skiplock stats`, the dashboard and the metrics read from it
  which pending types no running pool serves; masters read it before they
  park. NULL is a master of an older skiplock, which claims every type: while
  one is live, nothing is parked.
- Parking. A job that no pool takes is the oldest of the queue, so it sits at
  the front of "WorkerJob_claim_idx", and every claim that filters by type
  walks over all such jobs before it finds its own, at a cost that grows with
  their number (docs/benchmarks.md, "Figures behind the code"). A
  master's maintenance takes them out of that index by setting "heldBack" =
  true on those whose type no live master serves, and puts them back
  ("heldBack" = NULL) when it serves their type. "heldBack" already keeps rows
  out of the claim's index, and it is the one column the claim's partial
  index and every claim check; a new column would have meant a new claim
  index, rebuilt on every deployment's table. Held back with no concurrency
  key means parked; a keyed job that is held back waits for a slot of its key,
  and the triggers of 0005_features count slots by "heldBack" for keyed rows
  only: a keyed job is never parked, so no slot is ever miscounted.
- "WorkerJob_parked_idx" (type) over the parked rows only: a master puts its
  types back with one range scan of it per type, and finds nothing in an
  empty index at about the cost of a primary-key probe, which it does every
  heartbeat interval; `stats` counts parked jobs by type through it. Rows
  that are not parked are not in it: a claim or an enqueue costs it nothing
  but the evaluation of its predicate.
- "WorkerJob_heldBack_idx" (the next held-back job of a key) now leaves
  parked rows out (`"concurrencyKey" IS NOT NULL`): they would only have
  added a write to every parking and a NULL key to skip. Every query it
  serves names a key (`"concurrencyKey" = k`, which implies NOT NULL to the
  planner) or says IS NOT NULL.

Nothing is added to "WorkerJob" but that index, and "heldBack" is nullable
as before: the original schema's Prisma client reads and writes the table unchanged. The
downgrade puts every parked job back, so that an older skiplock, which knows
nothing of parking, claims them.
"""

from alembic import op

revision = "0012_routing"
down_revision = "0011_notify_in_statement"
branch_labels = None
depends_on = None

_PARKED = """status = 'PENDING' AND "heldBack" AND "concurrencyKey" IS NULL"""


_HELD_BACK_IDX = ('CREATE INDEX "WorkerJob_heldBack_idx" ON "WorkerJob" '
                  '("concurrencyKey", priority DESC, "availableAt" ASC) '
                  """WHERE status = 'PENDING' AND "heldBack" """)


def upgrade() -> None:
    op.execute('ALTER TABLE "WorkerProcess" ADD COLUMN served text[]')
    op.execute(f'CREATE INDEX "WorkerJob_parked_idx" ON "WorkerJob" (type) WHERE {_PARKED}')
    op.execute('DROP INDEX "WorkerJob_heldBack_idx"')
    op.execute(_HELD_BACK_IDX + 'AND "concurrencyKey" IS NOT NULL')


def downgrade() -> None:
    op.execute(f'UPDATE "WorkerJob" SET "heldBack" = NULL WHERE {_PARKED}')
    op.execute('DROP INDEX "WorkerJob_heldBack_idx"')
    op.execute(_HELD_BACK_IDX)
    op.execute('DROP INDEX "WorkerJob_parked_idx"')
    op.execute('ALTER TABLE "WorkerProcess" DROP COLUMN served')
