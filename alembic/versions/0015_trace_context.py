"""The trace context a job was enqueued in (OpenTelemetry).

Revision ID: 0015_trace_context
Revises: 0014_checkpoints
Create Date: 2026-12-06

"WorkerJob"."traceContext" jsonb: what the application's OpenTelemetry
propagator injected when the job was enqueued inside a span (W3C
`traceparent`, and `tracestate` and `baggage` when there are any), as an
object of header names and values. A pool child that traces its runs makes
each run a span of that trace, the enqueuing span's child
(queue_core/tracing.py); a retry is another run, in the same trace, since
nothing but an enqueue writes the column.

A column of its own rather than a key of an existing one: the payload is the
application's, which its handlers read as given, and the result and the
checkpoint are the handler's. jsonb, not the `traceparent` text alone:
whatever propagators the application configured come back as they went, and
jsonb keeps the header names with their values.

Nullable, without a default: adding it rewrites nothing (a catalog change,
under a brief lock of the table), a job enqueued outside a span or by another
producer (the original schema's Prisma client) has NULL and runs in a trace
of its own, and the claim returns it as text that only a child with tracing
on decodes. The downgrade drops the column and the contexts with it.
"""

from alembic import op

revision = "0015_trace_context"
down_revision = "0014_checkpoints"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" ADD COLUMN "traceContext" jsonb')


def downgrade() -> None:
    op.execute('ALTER TABLE "WorkerJob" DROP COLUMN "traceContext"')
