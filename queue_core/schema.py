"""The job table as SQLAlchemy sees it.

The migrations in `alembic/versions` are the authority on the database; this
mirror exists for code that wants typed columns (ad-hoc queries, reports), and
`tests/queue_core/test_schema.py` checks that the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from skiplock.queue_core.jobs import JobStatus

metadata = MetaData()

job_status = Enum(
    *[s.value for s in JobStatus], name="JobStatus", create_type=False, native_enum=True
)

worker_job = Table(
    "WorkerJob",
    metadata,
    Column("id", Text, primary_key=True, server_default=text("gen_random_uuid()::text")),
    Column("type", Text, nullable=False),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", job_status, nullable=False, server_default="PENDING"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("availableAt", DateTime(timezone=True), nullable=False,
           server_default=text("statement_timestamp()")),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("maxAttempts", Integer, nullable=False, server_default="3"),
    Column("lastError", Text),
    Column("lockedAt", DateTime(timezone=True)),
    Column("lockedBy", Text),
    Column("idempotencyKey", Text, unique=True),
    Column("userId", Text),
    Column("createdAt", DateTime(timezone=True), nullable=False,
           server_default=text("statement_timestamp()")),
    Column("startedAt", DateTime(timezone=True)),
    Column("completedAt", DateTime(timezone=True)),
    Column("result", JSONB),
    Column("interruptions", Integer),
    # 0005_features
    Column("cancelRequestedAt", DateTime(timezone=True)),
    Column("cancelledBy", Text),
    Column("concurrencyKey", Text),
    Column("concurrencyLimit", Integer),
    Column("heldBack", Boolean),
    Column("uniqueKey", Text),
    Column("uniqueUntil", DateTime(timezone=True)),
    Column("progress", REAL),
    Column("progressMessage", Text),
    Column("snoozes", Integer),
    Column("notifyDone", Boolean),
    Column("checkpoint", JSONB),
    # 0015_trace_context: the OpenTelemetry context the job was enqueued in.
    Column("traceContext", JSONB),
    # 0016_dependencies
    Column("waitingFor", Integer),
    Column("hasDependents", Boolean),
    # 0020_debounce
    Column("debounceKey", Text),
    Column("debounceMoves", Integer),
    Column("agedFrom", Integer),
    Column("agedAt", DateTime(timezone=True)),
    # 0019_sequences
    Column("sequenceKey", Text),
    Column("sequenceNo", BigInteger),
    Column("sequencePolicy", Text),
    # 0021_fairness: the key whose jobs take turns with other keys' (features/fairness.py).
    Column("fairKey", Text),
    # 0017_policies (the rates feature adds the same two): a rate limit and its key.
    Column("rate", Text),
    Column("rateKey", Text),
    # 0022_history: 'infinity' in the live part, the time it was moved in history.
    Column("archivedAt", DateTime(timezone=True), nullable=False,
           server_default=text("'infinity'")),
)
