"""Traces (queue_core/tracing.py): the enqueuing span's context stored with the job, and
each run a span of that trace.

The test process is the application: its spans come from an SDK tracer provider
of its own with the in-memory exporter (not the global one: nothing else in the
run sees it), and `enqueue` reads the current span as it would in any
application. The runs are recorded by the executor in this process, and, in the
last test, by a real pool whose children set their provider where they import
their handler modules (tests/applications/otel_handlers.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import skiplock
from skiplock.queue_core import lifecycle
from skiplock.queue_core.database import db
from tests.pool.conftest import REPO
from tests.queue_core.helpers import sql


@dataclass
class App:
    """The application's tracer provider, its tracer, and what it exported."""

    provider: TracerProvider
    tracer: trace.Tracer
    exporter: InMemorySpanExporter

    def finished(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]


@pytest.fixture
def app() -> Iterator[App]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield App(provider, provider.get_tracer("tests.applications"), exporter)
    provider.shutdown()


def stored(job_id: str) -> Any:
    return sql('SELECT "traceContext" FROM "WorkerJob" WHERE id = :id', id=job_id)[0][0]


def traceparent(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


# -- the enqueue -------------------------------------------------------------------


def test_every_enqueue_inside_a_span_stores_its_context(app: App) -> None:
    tracer = app.tracer
    outside = skiplock.enqueue("OTEL_X", {})
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as span:
        alone = skiplock.enqueue("OTEL_X", {})  # the prepared statement
        keyed = skiplock.enqueue("OTEL_X", {}, idempotency_key="order:1")
        many = skiplock.enqueue_many([{"type": "OTEL_X", "payload": {"n": n}} for n in range(3)])
        keyed_many = skiplock.enqueue_many([{"type": "OTEL_X", "payload": {},
                                             "idempotency_key": f"k{n}"} for n in range(2)])
        with db.get_engine().begin() as conn:  # joining the caller's transaction
            joined = skiplock.enqueue("OTEL_X", {}, conn=conn)
            joined_many = skiplock.enqueue_many([{"type": "OTEL_X", "payload": {}}] * 2,
                                                conn=conn)
    expected = {"traceparent": traceparent(span)}
    for job_id in (alone, keyed, *many, *keyed_many, joined, *joined_many):
        assert stored(job_id) == expected
    assert stored(outside) is None
    # `skiplock job` shows it, to find the job's trace.
    assert skiplock.get_job(alone).to_dict()["traceContext"] == expected
    assert skiplock.get_job(outside).to_dict()["traceContext"] is None


def test_both_claims_return_the_stored_context(app: App) -> None:
    # A child's first claim (`claim`), and the claim sent with its completions
    # (`complete_and_claim`, sql._CLAIMED_BY_POOL).
    with app.tracer.start_as_current_span("POST /orders") as span:
        skiplock.enqueue_many([{"type": "OTEL_X", "payload": {}}] * 2)
    [alone] = skiplock.claim("w", limit=1)
    done, [claimed] = lifecycle.complete_and_claim([(alone, None)], "w", 1)
    assert done == {alone.id}
    for job in (alone, claimed):
        assert job.trace_context is not None
        assert json.loads(job.trace_context) == {"traceparent": traceparent(span)}


def test_a_huge_baggage_is_not_copied_to_every_job(app: App) -> None:
    tracer = app.tracer
    token = otel_context.attach(baggage.set_baggage("tenant", "t" * 5000))
    try:
        with tracer.start_as_current_span("bulk") as span:
            job_id = skiplock.enqueue("OTEL_X", {})
    finally:
        otel_context.detach(token)
    assert stored(job_id) == {"traceparent": traceparent(span)}


def test_without_opentelemetry_enqueue_stores_nothing_and_never_imports_it(
        database_url: str) -> None:
    script = """
import sys
import skiplock
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported by skiplock"
sys.modules["opentelemetry"] = None  # as if it were not installed
from skiplock.queue_core import tracing
print(skiplock.enqueue("OTEL_X", {}), skiplock.enqueue_many([{"type": "OTEL_X", "payload": {}}])[0])
assert tracing.current_context is tracing._none
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": database_url,
                               "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    for job_id in done.stdout.split():
        assert stored(job_id) is None
