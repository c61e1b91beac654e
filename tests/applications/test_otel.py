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

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import skiplock
from skiplock.handlers.registry import JobResult, register_handler, unregister_handler
from skiplock.queue_core import lifecycle, tracing
from skiplock.queue_core.database import db
from tests.packaging.snippets import snippet
from tests.pool.conftest import REPO, Jobs
from tests.pool.test_executor import Rig
from tests.queue_core.helpers import sql
from tests.support import wait_for


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


@pytest.fixture
def worker(database_url: str, app: App) -> Iterator[Rig]:
    """A child's roles in this process (tests/pool/test_executor.py), tracing its runs
    with the application's provider."""
    rig = Rig(database_url)
    rig.executor.tracing = tracing.RunTracer(app.provider)
    yield rig
    rig.group.close()
    rig.completer.close()


@pytest.fixture
def handlers() -> Iterator[Callable[[str, Callable[..., JobResult]], None]]:
    registered: list[str] = []

    def register(job_type: str, fn: Callable[..., JobResult]) -> None:
        register_handler(job_type, fn)
        registered.append(job_type)

    yield register
    for job_type in registered:
        unregister_handler(job_type)


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


def test_an_awaited_enqueue_stores_its_tasks_context(app: App) -> None:
    async def request() -> tuple[Any, list[str]]:
        with app.tracer.start_as_current_span("GET /async", kind=SpanKind.SERVER) as span:
            one = await skiplock.aenqueue("OTEL_X", {})
            keyed = await skiplock.aenqueue("OTEL_X", {}, idempotency_key="async:1")
            many = await skiplock.aenqueue_many([{"type": "OTEL_X", "payload": {}}] * 2)
        return span, [one, keyed, *many]

    async def elsewhere() -> str:  # another task, outside any span
        return await skiplock.aenqueue("OTEL_X", {})

    span, ids = asyncio.run(request())
    for job_id in ids:
        assert stored(job_id) == {"traceparent": traceparent(span)}
    assert stored(asyncio.run(elsewhere())) is None


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
assert tracing.current_context is tracing._none and tracing.run_tracer() is None
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": database_url,
                               "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    for job_id in done.stdout.split():
        assert stored(job_id) is None


# -- the runs, in this process's executor ------------------------------------------------


def test_each_run_is_a_consumer_span_in_the_enqueuing_trace(worker: Rig, handlers: Any,
                                                            app: App) -> None:
    tracer = app.tracer
    nested: list[Any] = []

    def welcome(payload: dict[str, Any], job_id: str) -> JobResult:
        with tracer.start_as_current_span("send welcome email") as span:
            nested.append((span, baggage.get_baggage("tenant")))
        return JobResult(success=True)

    def flaky(payload: dict[str, Any], job_id: str) -> JobResult:
        raise ConnectionError("the mail server hung up")

    handlers("OTEL_WELCOME", welcome)
    handlers("OTEL_FLAKY", flaky)
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with tracer.start_as_current_span("POST /signup", kind=SpanKind.SERVER) as request:
            ok = skiplock.enqueue("OTEL_WELCOME", {"to": "ada@example.com"})
            bad = skiplock.enqueue("OTEL_FLAKY", {}, max_attempts=2)
    finally:
        otel_context.detach(token)
    assert stored(ok) == {"traceparent": traceparent(request), "baggage": "tenant=acme"}
    for job in worker.claim(2):
        assert worker.run(job) is None  # it waits in the group for its commit
    worker.completer.commit_group()
    sql("""UPDATE "WorkerJob" SET "availableAt" = now() WHERE id = :id""", id=bad)
    [again] = worker.claim(1)
    assert again.attempts == 2 and worker.run(again) is None
    worker.completer.commit_group()

    ctx = request.get_span_context()
    [run] = app.finished("skiplock.run OTEL_WELCOME")
    assert run.kind is SpanKind.CONSUMER and run.context.trace_id == ctx.trace_id
    assert run.parent is not None and run.parent.span_id == ctx.span_id
    assert [link.context.span_id for link in run.links] == [ctx.span_id]
    assert run.attributes == {
        "messaging.system": "skiplock", "messaging.operation.type": "process",
        "messaging.destination.name": "OTEL_WELCOME", "messaging.message.id": ok,
        "skiplock.job.id": ok, "skiplock.job.type": "OTEL_WELCOME",
        "skiplock.job.attempt": 1, "skiplock.job.max_attempts": 3,
        "skiplock.job.outcome": "completed"}
    assert run.status.status_code is StatusCode.UNSET
    # The handler's span nests in the run's, in the request's context (its baggage too).
    [(inner, tenant)] = nested
    assert inner.parent.span_id == run.context.span_id and tenant == "acme"
    assert inner.context.trace_id == ctx.trace_id
    # Each attempt is a run of its own, in the same trace, under the same span.
    runs = sorted(app.finished("skiplock.run OTEL_FLAKY"),
                  key=lambda s: s.attributes["skiplock.job.attempt"])
    assert [(s.attributes["skiplock.job.id"], s.attributes["skiplock.job.attempt"],
             s.attributes["skiplock.job.outcome"], s.status.status_code) for s in runs] == [
        (bad, 1, "retried", StatusCode.ERROR), (bad, 2, "dead_lettered", StatusCode.ERROR)]
    assert all(s.context.trace_id == ctx.trace_id and s.parent.span_id == ctx.span_id
               for s in runs)
    assert "ConnectionError: the mail server hung up" in runs[0].status.description
    assert skiplock.get_job(bad).status == "DEAD_LETTER"




def test_runs_that_end_before_or_without_a_commit_say_how(worker: Rig, handlers: Any,
                                                          app: App) -> None:
    handlers("OTEL_LATER", lambda payload, job_id: JobResult.snooze(60))
    handlers("OTEL_GIVES_UP", lambda payload, job_id: JobResult(
        False, error="the address bounced", should_retry=False))
    with app.tracer.start_as_current_span("POST /batch"):
        later = skiplock.enqueue("OTEL_LATER", {})
        gives_up = skiplock.enqueue("OTEL_GIVES_UP", {})
        unknown = skiplock.enqueue("OTEL_NOBODY_HANDLES", {})
    for job in worker.claim(3):
        worker.run(job)
    worker.completer.commit_group()
    said = {s.attributes["skiplock.job.id"]: (s.attributes["skiplock.job.outcome"],
                                              s.status.status_code, s.status.description)
            for s in app.finished("skiplock.run")}
    assert said == {
        later: ("snoozed", StatusCode.UNSET, None),
        gives_up: ("dead_lettered", StatusCode.ERROR, "the address bounced"),
        unknown: ("dead_lettered", StatusCode.ERROR,
                  "no handler registered for job type OTEL_NOBODY_HANDLES")}
    assert skiplock.get_job(later).status == "PENDING"


def test_a_job_without_a_usable_context_runs_in_a_trace_of_its_own(worker: Rig, handlers: Any,
                                                                   app: App) -> None:
    handlers("OTEL_PLAIN", lambda payload, job_id: JobResult(success=True))
    skiplock.enqueue("OTEL_PLAIN", {})  # outside any span, as another producer writes it
    # Rows written by hand: a propagator given them would raise, or find nothing.
    for value in ('{"traceparent": 5}', "[1, 2]", '{"traceparent": "00-zz"}',
                  '{"a": ' * 2000 + "1" + "}" * 2000):
        job_id = skiplock.enqueue("OTEL_PLAIN", {})
        sql("""UPDATE "WorkerJob" SET "traceContext" = CAST(:v AS jsonb) WHERE id = :id""",
            v=value, id=job_id)
    for job in worker.claim(5):
        worker.run(job)
    worker.completer.commit_group()
    runs = app.finished("skiplock.run OTEL_PLAIN")
    assert len(runs) == 5 and len({s.context.trace_id for s in runs}) == 5
    assert all(s.parent is None and not s.links for s in runs)
    assert {s.attributes["skiplock.job.outcome"] for s in runs} == {"completed"}
    assert sql("""SELECT count(*) FROM "WorkerJob" WHERE status = 'COMPLETED'""")[0][0] == 5


# -- the runs, in a real pool --------------------------------------------------------------


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_requests_trace_shows_the_runs_of_the_jobs_it_enqueued(
        app: App, start_pool: Any, jobs: Jobs, tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    spans.mkdir()
    marker = tmp_path / "flaky-ran-once"
    pool = start_pool(handlers="tests.applications.otel_handlers",
                      env={"SKIPLOCK_TEST_SPANS": str(spans)})

    def signup(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with app.tracer.start_as_current_span("POST /signup", kind=SpanKind.SERVER):
            welcome = skiplock.enqueue("OTEL_WELCOME", {"to": "ada@example.com"})
            [flaky] = skiplock.enqueue_many([{"type": "OTEL_FLAKY",
                                              "payload": {"marker": str(marker)}}])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"welcome": welcome, "flaky": flaky}).encode()]

    server = make_server("127.0.0.1", 0, signup, handler_class=QuietHandler)
    serving = threading.Thread(target=server.handle_request)
    serving.start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/signup",
                                         data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            ids = json.load(response)
    finally:
        serving.join(30)
        server.server_close()
    wait_for(lambda: jobs.all_done(2), 60, "both jobs to complete")
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(30) == 0, pool.log()

    [request_span] = app.finished("POST /signup")
    trace_id = f"{request_span.context.trace_id:032x}"
    request_id = f"{request_span.context.span_id:016x}"
    exported = [json.loads(line) for f in sorted(spans.glob("spans-*.jsonl"))
                for line in f.read_text().splitlines()]
    runs = sorted((s for s in exported if s["name"].startswith("skiplock.run ")),
                  key=lambda s: (s["name"], s["attributes"]["skiplock.job.attempt"]))
    # The request's trace: each run is its child, linked to it, and the retry is a
    # run of its own.
    assert [(s["name"], s["attributes"]["skiplock.job.id"],
             s["attributes"]["skiplock.job.attempt"], s["attributes"]["skiplock.job.outcome"],
             s["status"]) for s in runs] == [
        ("skiplock.run OTEL_FLAKY", ids["flaky"], 1, "retried", "ERROR"),
        ("skiplock.run OTEL_FLAKY", ids["flaky"], 2, "completed", "UNSET"),
        ("skiplock.run OTEL_WELCOME", ids["welcome"], 1, "completed", "UNSET")], runs
    for run in runs:
        assert (run["kind"], run["trace_id"], run["parent_id"], run["links"]) == \
            ("CONSUMER", trace_id, request_id, [[trace_id, request_id]]), run
        assert run["attributes"]["messaging.system"] == "skiplock"
        assert run["attributes"]["skiplock.job.type"] == run["name"].split()[-1]
    assert "ConnectionError: the mail server hung up" in runs[0]["description"]
    # The handler's own span nests in its run's.
    [email] = [s for s in exported if s["name"] == "send welcome email"]
    assert (email["trace_id"], email["parent_id"], email["pid"]) == \
        (trace_id, runs[2]["span_id"], runs[2]["pid"])
    assert email["attributes"] == {"email.to": "ada@example.com"}


def test_the_readme_snippet_traces_a_pools_runs(app: App, start_pool: Any, jobs: Jobs,
                                                 tmp_path: Path) -> None:
    # The README's handler module, with its tracer provider: the console exporter
    # prints each span as JSON, into the pool's log.
    folder = tmp_path / "myapp"
    folder.mkdir()
    (folder / "readme_jobs.py").write_text(snippet("handlers") + "\n" + snippet("otel"))
    pool = start_pool(handlers="readme_jobs",
                      env={"PYTHONPATH": f"{REPO}{os.pathsep}{folder}"})
    with app.tracer.start_as_current_span("POST /signup", kind=SpanKind.SERVER) as request:
        job_id = skiplock.enqueue("SEND_EMAIL", {"to": "ada@example.com"})
    wait_for(lambda: jobs.all_done(1), 60, "the job to complete")
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(30) == 0, pool.log()
    printed = [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", pool.log(), re.M | re.S)]
    [run] = [s for s in printed if s["name"] == "skiplock.run SEND_EMAIL"]
    context = request.get_span_context()
    assert (run["kind"], run["context"]["trace_id"], run["parent_id"]) == \
        ("SpanKind.CONSUMER", f"0x{context.trace_id:032x}", f"0x{context.span_id:016x}")
    assert run["attributes"]["skiplock.job.id"] == job_id
    assert run["attributes"]["skiplock.job.outcome"] == "completed"


def test_a_run_its_child_abandons_ends_with_the_interruption_recorded(
        app: App, start_pool: Any, jobs: Jobs, tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    spans.mkdir()
    pool = start_pool(handlers="tests.applications.otel_handlers",
                      env={"SKIPLOCK_TEST_SPANS": str(spans)})
    with app.tracer.start_as_current_span("POST /report"):
        job_id = skiplock.enqueue("OTEL_SLOW", {}, max_attempts=1)
    wait_for(lambda: jobs.statuses("OTEL_SLOW") == {"DEAD_LETTER": 1}, 60, "the timeout")
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(30) == 0, pool.log()
    exported = [json.loads(line) for f in spans.glob("spans-*.jsonl")
                for line in f.read_text().splitlines()]
    [run] = [s for s in exported if s["name"] == "skiplock.run OTEL_SLOW"]
    assert run["attributes"]["skiplock.job.id"] == job_id
    assert run["attributes"]["skiplock.job.outcome"] == "abandoned"
    assert (run["status"], run["exceptions"]) == ("ERROR", ["skiplock.pool.child.Abandon"]), run
    assert run["description"] == "Abandon: its worker stopped the run"
