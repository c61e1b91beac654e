"""Traces (OpenTelemetry, the `otel` extra): a job carries the trace context it was
enqueued in.

- Enqueue (`current_context`): when a span is current, what the application's
  propagator injects (the W3C `traceparent`, and `tracestate` and `baggage`
  when there are any) is stored with every job of the call, in
  "WorkerJob"."traceContext" (migration 0014_trace_context). Without a span,
  or without opentelemetry installed, the column stays NULL.

What it costs where it is not used: opentelemetry is imported by the first
enqueue, never by `import skiplock`. Not installed, every later enqueue pays
one call that returns None; installed without a current span, a
context-variable read.
"""

from __future__ import annotations

import json
from collections.abc import Callable

# Past this (a baggage of many entries: W3C allows 8 KiB of it), a job keeps
# only the trace's own headers: the context is stored with every job of a
# bulk enqueue.
MAX_CONTEXT_CHARS = 4096
_TRACE_HEADERS = ("traceparent", "tracestate")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def _none() -> str | None:
    return None


def _load() -> Callable[[], str | None]:
    """What reads the current context: opentelemetry's, or `_none` where it is not
    installed."""
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return _none
    current_span, inject = trace.get_current_span, propagate.inject

    def read() -> str | None:
        if not current_span().get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        inject(carrier)
        if not carrier:
            return None
        text = _encode(carrier)
        if len(text) > MAX_CONTEXT_CHARS:
            text = _encode({k: v for k, v in carrier.items() if k in _TRACE_HEADERS})
        return text

    return read


def _first_context() -> str | None:
    global current_context
    current_context = _load()
    return current_context()


# The current span's context as the JSON text "traceContext" stores, or None (no
# span is current, or opentelemetry is not installed: the first call finds out,
# and puts in its own place what answers from then on). Called as
# `tracing.current_context()`, so that every caller sees the replacement.
current_context: Callable[[], str | None] = _first_context
