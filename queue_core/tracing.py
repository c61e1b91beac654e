"""Traces (OpenTelemetry, the `otel` extra): a job carries the trace context it was
enqueued in, and each run of it is a span of that trace.

- Enqueue (`current_context`): when a span is current, what the application's
  propagator injects (the W3C `traceparent`, and `tracestate` and `baggage`
  when there are any) is stored with every job of the call, in
  "WorkerJob"."traceContext" (migration 0015_trace_context). Without a span,
  or without opentelemetry installed, the column stays NULL.
- Run (`RunTracer`): a pool child whose process has a tracer provider runs each
  job inside a CONSUMER span, `skiplock.run TYPE`, whose parent is the
  enqueuing span (so the request that enqueued the job shows its runs) and
  which links to it, as OpenTelemetry's messaging conventions ask of a
  consumer. The span is current while the handler runs: the handler's own
  spans nest inside it. A retry is another run: another span in the same
  trace, since nothing but the enqueue writes the column. A job without a
  stored context runs in a trace of its own.

What it costs where it is not used: opentelemetry is imported by the first
enqueue (and by a child once its handler modules are imported), never by
`import skiplock`. Not installed, every later enqueue pays one call that
returns None; installed without a current span, a context-variable read. A
child asks once whether its process has a tracer provider (`run_tracer`);
without one, each job pays one `if` in the executor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from skiplock.queue_core.storable import load_json

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from skiplock.queue_core.jobs import Job

log = logging.getLogger("skiplock.tracing")

# Past this (a baggage of many entries: W3C allows 8 KiB of it), a job keeps
# only the trace's own headers: the context is stored with every job of a
# bulk enqueue.
MAX_CONTEXT_CHARS = 4096
_TRACE_HEADERS = ("traceparent", "tracestate")
# The outcome of a run its child dropped; the others are pool/outcomes.py JobOutcome's.
ABANDONED = "abandoned"
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


def _carrier(stored: str | None) -> dict[str, str]:
    """A stored context as a propagator reads it: string headers only, whatever a
    hand-written row holds (a propagator given anything else may raise)."""
    if not stored:
        return {}
    value, _ = load_json(stored)
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


class RunTracer:
    """The spans of a process's runs, on the tracer provider it was made with."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.context import Context
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        self.provider = provider
        self.tracer = provider.get_tracer("skiplock", _version())
        self._extract = propagate.extract
        self._attach, self._detach = context.attach, context.detach
        self._span_of = trace.get_current_span
        self._empty = Context
        self._link = Link
        self._consumer = SpanKind.CONSUMER
        self._error = (Status, StatusCode.ERROR)

    def parent(self, job: Job) -> Context:
        """The context the job was enqueued in (empty when none was stored)."""
        return self._extract(_carrier(job.trace_context), context=self._empty())

    @contextmanager
    def run(self, job: Job) -> Iterator[Span]:
        """The job's run as the current span, in the context it was enqueued in (its
        baggage too); an exception that escapes it is recorded."""
        parent = self.parent(job)
        enqueued = self._span_of(parent).get_span_context()
        token = self._attach(parent)
        try:
            with self.tracer.start_as_current_span(
                    f"skiplock.run {job.type}", context=parent, kind=self._consumer,
                    links=[self._link(enqueued)] if enqueued.is_valid else None,
                    attributes={
                        "messaging.system": "skiplock",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": job.type,
                        "messaging.message.id": job.id,
                        "skiplock.job.id": job.id,
                        "skiplock.job.type": job.type,
                        "skiplock.job.attempt": job.attempts,
                        "skiplock.job.max_attempts": job.max_attempts,
                    }) as span:
                try:
                    yield span
                except Exception:
                    raise  # recorded by the SDK
                except BaseException as exc:
                    # What the SDK leaves alone: a child drops its run by raising a
                    # BaseException into the handler (pool/child.py Abandon, on SIGQUIT:
                    # a timeout, a cancel, an immediate stop). Its master settles the job.
                    span.record_exception(exc)
                    self.ended(span, ABANDONED,
                               f"{type(exc).__name__}: its worker stopped the run")
                    raise
        finally:
            self._detach(token)

    def ended(self, span: Span, outcome: str, error: str | None = None) -> None:
        """How the run ended: `skiplock.job.outcome`, and an error status with its reason."""
        span.set_attribute("skiplock.job.outcome", outcome)
        if error is not None:
            status, code = self._error
            span.set_status(status(code, error[:1000]))

    def flush(self, timeout_s: float = 5.0) -> None:
        """Export what the provider still holds: a child leaves by `os._exit`, which runs
        no exit handler of the SDK's."""
        force_flush = getattr(self.provider, "force_flush", None)
        if force_flush is None:
            return
        try:
            force_flush(int(timeout_s * 1000))
        except Exception as exc:  # the exporter's own failure: the child leaves anyway
            log.warning("could not export the last spans: %s", exc)


def run_tracer() -> RunTracer | None:
    """The process's `RunTracer`, or None: opentelemetry is not installed, or no tracer
    provider was set. A pool child asks once, after its handler modules are imported
    (where an application sets its provider)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return RunTracer(provider)


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("skiplock")
    except metadata.PackageNotFoundError:
        return None
