"""skiplock from asyncio (`aenqueue`, `aenqueue_many`, `await_result`, `acancel`), on a real
database: psycopg 3's AsyncConnection and SQLAlchemy's AsyncSession / AsyncConnection,
inside the caller's transaction or on connections of skiplock's own.

Every coroutine runs on an event loop whose default executor refuses work (`run`), and
the number of threads is the same after as before: nothing here is a blocking call
sent to a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

import skiplock
from skiplock.queue_core import (
    CancelOutcome,
    DatabaseUnavailable,
    InvalidJob,
    InvalidPayload,
    JobNotFound,
    TransactionConflict,
    WaitTimeout,
)
from skiplock.queue_core.database import db
from skiplock.queue_core.database.faults import Fault, classify
from skiplock.queue_core.database.urls import libpq_dsn
from tests.packaging.snippets import SIGNUP_TABLE, readme_url, snippet
from tests.pool.conftest import REPO, Pool
from tests.queue_core.helpers import count, row, sql
from tests.support import free_port, wait_for

T = TypeVar("T")


class NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A loop's default executor that fails any work given to it (asyncio takes a
    ThreadPoolExecutor only; this one never starts a thread)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{fn!r} was sent to a thread")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a new loop that has no thread to give, and check none was started."""
    threads = threading.active_count()
    loop = asyncio.new_event_loop()
    loop.set_default_executor(NoThreads())
    try:
        result = loop.run_until_complete(coro)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert threading.active_count() == threads
    return result


@pytest.fixture
def dsn(database_url: str) -> str:
    return libpq_dsn(database_url)


@pytest.fixture
def engine(database_url: str) -> Callable[[], AsyncEngine]:
    """An application's async engine on psycopg 3, made on the loop that uses it."""
    url = make_url(database_url).set(drivername="postgresql+psycopg")
    return lambda: create_async_engine(url, poolclass=NullPool)


def _pending(job_type: str = "AIO") -> list[str]:
    return [r[0] for r in sql('SELECT id FROM "WorkerJob" WHERE type = :t', t=job_type)]


# -- enqueue in the caller's transaction ------------------------------------------------------

def test_a_psycopg_async_transaction_that_rolls_back_leaves_no_job_and_one_that_commits_does(
        dsn: str) -> None:
    async def go() -> str:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await skiplock.aenqueue("AIO", {"n": 1}, conn=conn)
            assert count() == 0  # not before the caller commits
            await conn.rollback()
            job_id = await skiplock.aenqueue("AIO", {"n": 2}, conn=conn,
                                             idempotency_key="aio:2", priority=5)
        return job_id  # committed on leaving the block

    job_id = run(go())
    assert _pending() == [job_id]
    stored = row(job_id)
    assert (stored.payload, stored.idempotencyKey, stored.priority, stored.st) == (
        {"n": 2}, "aio:2", 5, "PENDING")


def test_a_sqlalchemy_async_session_and_connection_join_their_transaction(
        engine: Callable[[], AsyncEngine]) -> None:
    async def go() -> list[str]:
        eng = engine()
        try:
            async with AsyncSession(eng) as session:
                async with session.begin():
                    await skiplock.aenqueue("AIO", {"via": "session"}, conn=session,
                                            idempotency_key="aio:gone")
                    await session.rollback()
                async with session.begin():
                    kept = await skiplock.aenqueue("AIO", {"via": "session"}, conn=session,
                                                   idempotency_key="aio:kept")
                    # The same key again, in the same transaction: the same job.
                    assert await skiplock.aenqueue("AIO", {}, conn=session,
                                                   idempotency_key="aio:kept") == kept
            async with eng.begin() as conn:
                plain = await skiplock.aenqueue("AIO", {"via": "connection"}, conn=conn)
            async with eng.connect() as conn:
                await skiplock.aenqueue("AIO", {"via": "rolled back"}, conn=conn)
                await conn.rollback()
            return [kept, plain]
        finally:
            await eng.dispose()

    ids = run(go())
    assert sorted(_pending()) == sorted(ids)
    assert count('"idempotencyKey" = \'aio:gone\'') == 0


def test_an_existing_key_gives_the_existing_job_also_to_concurrent_enqueues(dsn: str) -> None:
    waited: list[float] = []

    async def one(first_in: asyncio.Event, first: bool) -> str:
        # lock_timeout: an enqueue that blocked the loop would wait on the other's
        # uncommitted row forever; here it fails instead.
        async with await psycopg.AsyncConnection.connect(
                dsn, options="-c lock_timeout=10s") as conn:
            if not first:
                await first_in.wait()
            began = time.monotonic()
            job_id = await skiplock.aenqueue("AIO", {}, conn=conn, idempotency_key="same")
            if first:
                first_in.set()
                await asyncio.sleep(0.5)  # the other one waits for our commit meanwhile
            else:
                waited.append(time.monotonic() - began)
            return job_id

    async def both() -> list[str]:
        ready = asyncio.Event()
        return list(await asyncio.gather(one(ready, True), one(ready, False)))

    a, b = run(both())
    assert a == b and _pending() == [a]
    assert waited[0] >= 0.4  # it waited for the first one's row, the loop running on
    # On connections of skiplock's own, and against a key the blocking call wrote.
    blocking = skiplock.enqueue("AIO", {}, idempotency_key="mixed")

    async def own() -> list[str]:
        return list(await asyncio.gather(*(skiplock.aenqueue("AIO", {}, idempotency_key=key)
                                           for key in ("mixed", "new", "new"))))

    mixed, new, again = run(own())
    assert mixed == blocking and new == again and count() == 3


def test_unique_windows_hold_as_for_the_blocking_call() -> None:
    async def go() -> tuple[str, str, str]:
        first = await skiplock.aenqueue("AIO", {}, idempotency_key="u", unique_for="active")
        same = await skiplock.aenqueue("AIO", {}, idempotency_key="u", unique_for="active")
        sql("UPDATE \"WorkerJob\" SET status = 'COMPLETED' WHERE id = :id", id=first)
        after = await skiplock.aenqueue("AIO", {}, idempotency_key="u", unique_for="active")
        return first, same, after

    first, same, after = run(go())
    assert first == same and after != first
    assert row(first).uniqueKey is None and row(after).uniqueKey == "u"
    hourly = skiplock.enqueue("AIO", {}, idempotency_key="h", unique_for="1h")
    assert run(skiplock.aenqueue("AIO", {}, idempotency_key="h", unique_for="1h")) == hourly
    with pytest.raises(InvalidJob, match="unique_for needs an idempotency key"):
        run(skiplock.aenqueue("AIO", {}, unique_for="1h"))


def test_debounce_holds_as_for_the_blocking_call() -> None:
    async def go() -> list[str]:
        first = await skiplock.aenqueue("AIO", {"n": 1}, debounce="1m", debounce_key="d")
        moved = await skiplock.aenqueue("AIO", {"n": 2}, debounce="1m", debounce_key="d",
                                        debounce_mode="replace")
        batch = await skiplock.aenqueue_many([
            {"type": "AIO", "payload": {"n": 3}, "debounce": 60, "debounce_key": "d"}])
        return [first, moved, *batch]

    ids = run(go())
    assert len(set(ids)) == 1 and ids[0] == skiplock.enqueue(
        "AIO", {"n": 4}, debounce="1m", debounce_key="d")
    assert (row(ids[0]).payload, row(ids[0]).debounceMoves) == ({"n": 2}, 3)


REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("", {}),
    ("AIO", {"x": math.nan}),
    ("AIO", {"x": "\x00"}),
    ("AIO", {"priority": True}),
    ("AIO", {"delay": -1}),
    ("AIO", {"max_attempts": 0}),
    ("AIO", {"idempotency_key": ""}),
    ("AIO", {"unique_for": "1h"}),
    ("AIO", {"concurrency": 2}),
    ("INTERPRET_EVENT", {}),
]


@pytest.mark.parametrize(("job_type", "case"), REFUSED)
def test_a_refused_job_says_what_the_blocking_call_says_and_sends_nothing(
        job_type: str, case: dict[str, Any], dsn: str) -> None:
    options = {k: v for k, v in case.items() if k != "x"}
    payload = {"x": case["x"]} if "x" in case else {}
    with pytest.raises((InvalidJob, InvalidPayload)) as blocking:
        skiplock.enqueue(job_type, payload, **options)

    async def go() -> BaseException:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises((InvalidJob, InvalidPayload)) as refused:
                await skiplock.aenqueue(job_type, payload, conn=conn, **options)
            # Refused before anything was sent: the caller's transaction is usable.
            await conn.execute("SELECT 1")
            return refused.value

    refused = run(go())
    assert (type(refused), str(refused)) == (type(blocking.value), str(blocking.value))
    batch = [{"type": job_type, "payload": payload, **options}]
    with pytest.raises((InvalidJob, InvalidPayload)) as many:
        run(skiplock.aenqueue_many(batch))
    with pytest.raises((InvalidJob, InvalidPayload)) as blocking_many:
        skiplock.enqueue_many(batch)
    assert str(many.value) == str(blocking_many.value)
    assert count() == 0


def test_aenqueue_many_writes_a_batch_in_order_with_existing_keys() -> None:
    existing = skiplock.enqueue("AIO", {}, idempotency_key="many:1")

    async def go() -> tuple[list[str], list[str], list[str]]:
        plain = await skiplock.aenqueue_many([{"type": "AIO", "payload": {"i": i}}
                                              for i in range(3)])
        keyed = await skiplock.aenqueue_many([
            {"type": "AIO", "payload": {}, "idempotency_key": "many:1"},
            {"type": "AIO", "payload": {"i": 9}, "idempotency_key": "many:2", "delay": 60},
            {"type": "AIO", "payload": {}, "idempotency_key": "many:2"},
        ])
        return plain, keyed, await skiplock.aenqueue_many([])

    plain, keyed, empty = run(go())
    assert [row(i).payload for i in plain] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert keyed[0] == existing and keyed[1] == keyed[2] and row(keyed[1]).payload == {"i": 9}
    assert empty == [] and count() == 5
    with pytest.raises(InvalidJob, match="job #1 has unknown options: colour"):
        run(skiplock.aenqueue_many([{"type": "AIO", "payload": {}},
                                    {"type": "AIO", "payload": {}, "colour": "red"}]))


def test_database_errors_read_as_for_the_blocking_call(dsn: str, database_url: str,
                                                       user_foreign_key: None) -> None:
    async def go() -> list[str]:
        messages = []
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            for key in (None, "fk"):
                with pytest.raises(InvalidJob) as refused:
                    await skiplock.aenqueue("AIO", {}, user_id="nobody", idempotency_key=key,
                                            conn=conn)
                messages.append(str(refused.value))
                await conn.rollback()
        return messages

    with pytest.raises(InvalidJob) as blocking:
        skiplock.enqueue("AIO", {}, user_id="nobody")
    assert run(go()) == [str(blocking.value)] * 2
    assert "the user does not exist" in str(blocking.value)
    # Nothing answers: one line, no password, as the blocking call says it.
    secret = "s3cr3t-pw"
    nobody = make_url(database_url).set(host="127.0.0.1", port=free_port(), password=secret)
    try:
        db.get_engine(nobody.render_as_string(hide_password=False))
        for call in (skiplock.aenqueue("AIO", {}), skiplock.acancel("x"),
                     skiplock.await_result("x", timeout=1)):
            with pytest.raises(DatabaseUnavailable) as caught:
                run(call)
            assert classify(caught.value) == Fault.REFUSED
            assert secret not in str(caught.value) and "\n" not in str(caught.value)
    finally:
        db.reset_engine()
        db.get_engine(database_url)
    assert count() == 0


def test_a_key_enqueued_after_the_callers_snapshot_is_a_transaction_conflict(dsn: str) -> None:
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await conn.execute("SELECT 1")  # the snapshot
            other = await skiplock.aenqueue("AIO", {}, idempotency_key="late")
            with pytest.raises(TransactionConflict, match="key late") as conflict:
                await skiplock.aenqueue("AIO", {}, conn=conn, idempotency_key="late")
            assert conflict.value.sqlstate == "40001"
            await conn.rollback()
            assert await skiplock.aenqueue("AIO", {}, conn=conn, idempotency_key="late") == other

    run(go())


def test_a_connection_an_async_call_cannot_use_is_refused_in_one_line(
        dsn: str, database_url: str) -> None:
    with psycopg.connect(dsn) as blocking, pytest.raises(
            TypeError, match="psycopg.Connection .*blocking calls"):
        run(skiplock.aenqueue("AIO", {}, conn=blocking))
    with pytest.raises(TypeError, match="not builtins.str"):
        run(skiplock.acancel("x", conn=database_url))
    assert count() == 0


def test_importing_skiplock_imports_neither_psycopg_nor_sqlalchemys_asyncio(
        database_url: str) -> None:
    """The blocking API never needs them (psycopg 3 lengthens every process's start):
    the async calls import psycopg 3 when they first open a connection of their own."""
    code = ("import sys\n"
            "for name in ('psycopg', 'greenlet', 'sqlalchemy.ext.asyncio'):\n"
            "    sys.modules[name] = None  # importing it now fails\n"
            "import skiplock\n"
            "print(skiplock.enqueue('AIO', {}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DATABASE_URL": database_url})
    assert done.returncode == 0, done.stderr
    assert _pending() == [done.stdout.strip()]


def test_the_loop_of_these_tests_has_no_thread_to_give() -> None:
    """What `run` catches: a blocking call sent to the loop's executor, which is what
    `asyncio.to_thread` and a host name's lookup do."""
    with pytest.raises(AssertionError, match="was sent to a thread"):
        run(asyncio.to_thread(time.sleep, 0))


# -- cancel ------------------------------------------------------------------------------

def test_acancel_says_what_happened_to_each_job(dsn: str) -> None:
    pending = skiplock.enqueue("AIO", {})
    running = skiplock.enqueue("AIO", {}, priority=10)
    [claimed] = skiplock.claim("w", types=["AIO"])
    assert claimed.id == running
    done = skiplock.enqueue("AIO", {})
    sql("UPDATE \"WorkerJob\" SET status = 'COMPLETED' WHERE id = :id", id=done)

    async def go() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            rolled_back = await skiplock.acancel(pending, by="ops@example", conn=conn)
            await conn.rollback()
        one = await skiplock.acancel(pending, by="ops@example")
        many = await skiplock.acancel_many([running, done, "nope", running], by="ops@example")
        return [rolled_back, one, *many]

    rolled_back, one, *many = run(go())
    assert rolled_back.outcome is CancelOutcome.CANCELLED
    assert (one.outcome, one.status) == (CancelOutcome.CANCELLED, "FAILED")
    assert [(r.job_id, r.outcome) for r in many] == [
        (running, CancelOutcome.CANCELLING), (done, CancelOutcome.FINISHED),
        ("nope", CancelOutcome.NOT_FOUND)]
    assert row(pending).lastError.startswith("cancelled by ops@example at ")
    assert row(running).cancelledBy == "ops@example"
    with pytest.raises(InvalidJob) as blocking:
        skiplock.cancel(pending, by="")
    with pytest.raises(InvalidJob) as refused:
        run(skiplock.acancel(pending, by=""))
    assert str(refused.value) == str(blocking.value)


# -- waiting -----------------------------------------------------------------------------

async def _finish_later(job_id: str, result: Any, after: float = 0.3) -> None:
    """Another connection ends the job: a worker's claim and completion."""
    await asyncio.sleep(after)
    # The waiter's mark locks the row for an instant, and a claim skips locked rows.
    for _ in range(500):
        claimed = skiplock.claim("w", types=["AIO"])
        if claimed:
            break
        await asyncio.sleep(0.02)
    [job] = claimed
    assert job.id == job_id
    assert skiplock.complete(job, result)


@pytest.mark.parametrize("listen", [True, False])
def test_await_result_returns_the_job_another_connection_completed(listen: bool) -> None:
    job_id = skiplock.enqueue("AIO", {})

    async def go() -> tuple[Any, float]:
        ender = asyncio.create_task(_finish_later(job_id, {"answer": 42}))
        began = time.monotonic()
        # Listening, a re-read every 30 s would come far too late: the notification
        # wakes it. Polling, it re-reads every 0.05 s up to 0.2 s.
        job = await skiplock.await_result(job_id, timeout=20, listen=listen,
                                          poll_max=30 if listen else 0.2)
        await ender
        return job, time.monotonic() - began

    job, took = run(go())
    assert (job.status, job.result) == ("COMPLETED", {"answer": 42})
    assert took < 5
    assert row(job_id).notifyDone is True


def _listeners() -> int:
    return int(sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND query = :q", q="LISTEN skiplock_done")[0][0])


def test_a_lost_listen_connection_falls_back_to_polling() -> None:
    job_id = skiplock.enqueue("AIO", {})

    async def go() -> Any:
        async def cut_then_finish() -> None:
            for _ in range(200):
                if _listeners():
                    break
                await asyncio.sleep(0.02)
            assert _listeners() == 1
            sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = :q", q="LISTEN skiplock_done")
            await _finish_later(job_id, "late", after=0.2)

        ender = asyncio.create_task(cut_then_finish())
        job = await skiplock.await_result(job_id, timeout=20, listen=True, poll_max=0.3)
        await ender
        return job

    assert run(go()).status == "COMPLETED"


def test_await_result_times_out_at_its_timeout_and_says_how_the_job_is() -> None:
    job_id = skiplock.enqueue("AIO", {})
    for listen in (True, False):
        began = time.monotonic()
        with pytest.raises(WaitTimeout, match=f"job {job_id} is still PENDING after 0.3s"):
            run(skiplock.await_result(job_id, timeout=0.3, listen=listen))
        assert 0.3 <= time.monotonic() - began < 2.5
    with pytest.raises(JobNotFound):
        run(skiplock.await_result("no-such-job", timeout=1))


@pytest.fixture
def row_locked() -> Iterator[Callable[[str], None]]:
    """Another session's `SELECT ... FOR UPDATE` of a job, held to the end of the test."""
    conn = db.get_engine().connect()
    trans = conn.begin()
    def lock(job_id: str) -> None:
        conn.execute(text('SELECT 1 FROM "WorkerJob" WHERE id = :id FOR UPDATE'), {"id": job_id})

    try:
        yield lock
    finally:
        trans.rollback()
        conn.close()


def test_a_row_lock_on_the_job_does_not_outlast_the_timeout(row_locked: Callable[[str], None]
                                                            ) -> None:
    job_id = skiplock.enqueue("AIO", {})
    row_locked(job_id)
    began = time.monotonic()
    with pytest.raises(WaitTimeout, match=f"job {job_id} is still PENDING after 0.5s"):
        run(skiplock.await_result(job_id, timeout=0.5))
    assert time.monotonic() - began < 2.5


@pytest.mark.parametrize("timeout", [math.nan, -1, -math.inf])
def test_a_timeout_that_is_not_a_duration_is_refused(timeout: float) -> None:
    job_id = skiplock.enqueue("AIO", {})
    with pytest.raises(ValueError) as blocking:
        skiplock.wait(job_id, timeout=timeout)
    with pytest.raises(ValueError) as refused:
        run(skiplock.await_result(job_id, timeout=timeout))
    assert str(refused.value) == str(blocking.value)
    assert "timeout must be None or a number of seconds >= 0" in str(refused.value)
    with pytest.raises(ValueError, match="poll_"):
        run(skiplock.await_result(job_id, timeout=1, poll_min=math.nan))
    assert row(job_id).notifyDone is None  # refused before anything was sent


def test_cancelling_the_awaiting_task_closes_its_connections() -> None:
    job_id = skiplock.enqueue("AIO", {})

    async def go() -> None:
        waiter = asyncio.create_task(skiplock.await_result(job_id))
        for _ in range(200):
            if _listeners():
                break
            await asyncio.sleep(0.02)
        assert _listeners() == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    run(go())
    wait_for(lambda: _listeners() == 0, 5, "the LISTEN connection to close")
    assert row(job_id).st == "PENDING"


# -- the README's snippet ------------------------------------------------------------------

@pytest.fixture
def signup_table(database_url: str) -> Iterator[None]:
    sql(SIGNUP_TABLE)
    yield
    sql("DROP TABLE signup")


def test_the_readme_asyncio_snippet_enqueues_in_its_transaction_and_awaits_the_result(
        start_pool: Callable[..., Pool], database_url: str,
        signup_table: None, capsys: pytest.CaptureFixture[str]) -> None:
    start_pool("--concurrency", "1", handlers="examples.fastapi_app.jobs")
    scope: dict[str, Any] = {"DATABASE_URL": readme_url(database_url)}
    exec(snippet("asyncio"), scope)
    [(user, email)] = sql("SELECT id, email FROM signup")
    [job] = sql('SELECT id, status::text, result, "idempotencyKey" FROM "WorkerJob"')
    assert (job[1], job[2], job[3]) == ("COMPLETED", {"sent_to": email}, f"welcome:{user}")
    assert capsys.readouterr().out == f"COMPLETED {{'sent_to': '{email}'}}\n"
