"""Handlers of the OpenTelemetry pool test, and the tracer provider of the child that
imports them.

A worker child imports its handler modules when it boots, so this is where an
application sets its provider. The exporter writes each finished span as a line
of JSON to a file of its own per process, in the folder SKIPLOCK_TEST_SPANS
names. The batch processor exports only when flushed (its delay is ten
minutes): the spans reach the file only if the child flushes them before it
leaves, which it does by `os._exit`, past every exit handler of the SDK's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from skiplock import JobResult, handler


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as the test reads it: ids in hex, as trace viewers show them."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "links": [[f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}"]
                  for link in span.links],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "description": span.status.description,
        "exceptions": [str((event.attributes or {}).get("exception.type"))
                       for event in span.events if event.name == "exception"],
        "pid": os.getpid(),
    }


class JsonLinesExporter(SpanExporter):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        with open(self.folder / f"spans-{os.getpid()}.jsonl", "a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS


if os.environ.get("SKIPLOCK_TEST_SPANS"):
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(
        JsonLinesExporter(os.environ["SKIPLOCK_TEST_SPANS"]), schedule_delay_millis=600_000))
    trace.set_tracer_provider(provider)

tracer = trace.get_tracer("tests.applications.otel_handlers")


@handler("OTEL_WELCOME")
def welcome(payload: dict[str, Any], job_id: str) -> JobResult:
    # The handler's own span: a child of the run's span, which is current here.
    with tracer.start_as_current_span("send welcome email") as span:
        span.set_attribute("email.to", payload["to"])
    return JobResult(success=True)


@handler("OTEL_FLAKY", backoff=0)
def flaky(payload: dict[str, Any], job_id: str) -> JobResult:
    """Fails its first run (a marker file says whether it ran), succeeds the next."""
    try:
        os.close(os.open(payload["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return JobResult(success=True)
    raise ConnectionError("the mail server hung up")


@handler("OTEL_SLOW", timeout_s=1)
def slow(payload: dict[str, Any], job_id: str) -> JobResult:
    time.sleep(60)  # past its timeout: the master stops its child (SIGQUIT)
    return JobResult(success=True)
