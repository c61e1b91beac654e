"""History (migration 0022_history): finished jobs moved out of the live part stay readable
by every reader, keys stay unique across both parts, hot statements lock no history
partition, and cleanup drops whole partitions. The mover runs with a retention of 0."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg2
from click.testing import CliRunner
from sqlalchemy import text

from skiplock import queue_core as q
from skiplock.cli import main
from skiplock.dashboard.app import create_app
from skiplock.dashboard.settings import DashboardSettings
from skiplock.queue_core import config
from skiplock.queue_core import sql as statements
from skiplock.queue_core.database import db
from skiplock.queue_core.database.urls import database_url, libpq_dsn
from skiplock.queue_core.features import history
from skiplock.queue_core.features.waiting import wait
from tests.pool.conftest import jobs, pool_engine, start_pool  # noqa: F401
from tests.queue_core.helpers import count, sql
from tests.support import wait_for

runner = CliRunner()


def part_of(job_id: str) -> str:
    return sql('SELECT tableoid::regclass::text FROM "WorkerJob" WHERE id = :id', id=job_id)[0][0]


def finish(job_type: str, *, key: str | None = None, result: object = None) -> str:
    job_id = q.enqueue(job_type, {}, idempotency_key=key)
    [job] = q.claim("w", types=[job_type])
    assert q.complete(job, result)
    return job_id


def dead(job_type: str) -> str:
    job_id = q.enqueue(job_type, {}, max_attempts=1)
    [job] = q.claim("w", types=[job_type])
    q.fail(job, "boom")
    return job_id


def archive() -> int:
    return history.move(0, 0)


def cli(*args: str) -> str:
    config.clear_cache()
    result = runner.invoke(main, list(args), catch_exceptions=False)
    config.clear_cache()
    assert result.exit_code == 0, result.output
    return result.output


def test_every_reader_finds_an_archived_job():
    done = finish("H_READ", key="read-key", result={"n": 7})
    letter = dead("H_READ")
    assert archive() == 2
    assert part_of(done).startswith('"WorkerJobHistory_') and part_of(letter) != '"WorkerJobLive"'
    assert q.get_job(done).result == {"n": 7}
    assert wait(done, timeout=5).result == {"n": 7}  # a finished job: no wait at all
    stats = q.stats()
    assert (stats.completed, stats.dead_letter) == (1, 1)
    assert json.loads(cli("job", done, "--json"))["status"] == "COMPLETED"
    assert done in cli("jobs", "--status", "COMPLETED")
    client = create_app(DashboardSettings()).test_client()
    assert client.get(f"/jobs/{done}").status_code == 200
    assert done in client.get("/jobs", query_string={"status": "COMPLETED"}).get_data(as_text=True)
    assert client.get("/jobs", query_string={"q": "read-key"}).status_code in (200, 302)
    # The key's job is in history: an enqueue of the key returns it ("exists").
    assert q.enqueue("H_READ", {}, idempotency_key="read-key") == done
    assert q.enqueue_many([{"type": "H_READ", "payload": {}, "idempotency_key": "read-key"},
                           {"type": "H_READ", "payload": {}}])[0] == done
    assert count("\"idempotencyKey\" = 'read-key'") == 1


def test_a_retried_dead_letter_comes_back_from_history_and_runs():
    letter = dead("H_RETRY")
    archive()
    assert q.retry_dead([letter]) == [letter]
    assert part_of(letter) == '"WorkerJobLive"'
    [job] = q.claim("w", types=["H_RETRY"])
    assert job.id == letter and q.complete(job)
    # The same through a plain UPDATE, as Prisma's updateMany does it.
    again = dead("H_RETRY")
    archive()
    sql("""UPDATE "WorkerJob" SET status = 'PENDING', attempts = 0 WHERE id = :id""", id=again)
    assert part_of(again) == '"WorkerJobLive"'
    assert [j.id for j in q.claim("w", types=["H_RETRY"])] == [again]


def test_a_key_archived_while_an_insert_waits_is_refused_then_found():
    # The mover's race: session A moves the key's row (not committed), session B inserts
    # the key and waits on the live index; A commits; B must not make a second job.
    job_id = finish("H_RACE", key="race-key")
    mover = psycopg2.connect(libpq_dsn(database_url()))
    try:
        with mover.cursor() as cur:
            cur.execute("""UPDATE "WorkerJob" SET "archivedAt" = now() WHERE id = %s""", (job_id,))
        outcome: dict[str, BaseException | None] = {}

        def insert() -> None:
            conn = psycopg2.connect(libpq_dsn(database_url()))
            try:
                with conn.cursor() as cur:
                    cur.execute("""INSERT INTO "WorkerJob" (type, "idempotencyKey")
                                   VALUES ('H_RACE', 'race-key') ON CONFLICT DO NOTHING""")
                conn.commit()
                outcome["error"] = None
            except psycopg2.Error as exc:
                outcome["error"] = exc
            finally:
                conn.close()

        inserter = threading.Thread(target=insert)
        inserter.start()
        assert _until(lambda: sql("""SELECT count(*) FROM pg_stat_activity
                                     WHERE wait_event_type = 'Lock'
                                       AND query LIKE '%race-key%'""")[0][0] == 1)
        mover.commit()
        inserter.join(10)
    finally:
        mover.close()
    error = outcome["error"]
    assert isinstance(error, psycopg2.errors.UniqueViolation), error
    assert error.diag.constraint_name == "WorkerJob_idempotencyKey_key"
    assert count("\"idempotencyKey\" = 'race-key'") == 1
    assert q.enqueue("H_RACE", {}, idempotency_key="race-key") == job_id


def test_a_retry_that_meets_a_dead_letter_being_moved_runs_again():
    # Session A moves the dead letter (not committed); the retry's UPDATE waits for the
    # row; A commits; the retry's statement gets 40001 ("already moved to another
    # partition"), which is a conflict to run again, not an outage: it revives the job
    # from history.
    letter = dead("H_MOVED")
    mover = psycopg2.connect(libpq_dsn(database_url()))
    outcome: dict[str, object] = {}
    try:
        with mover.cursor() as cur:
            cur.execute("""UPDATE "WorkerJob" SET "archivedAt" = now() WHERE id = %s""", (letter,))

        def retry() -> None:
            try:
                outcome["retried"] = q.retry_dead([letter])
            except Exception as exc:  # noqa: BLE001 (the test reads it)
                outcome["retried"] = exc

        retrier = threading.Thread(target=retry)
        retrier.start()
        assert _until(lambda: sql("""SELECT count(*) FROM pg_stat_activity
                                     WHERE wait_event_type = 'Lock' AND backend_type = 'client backend'
                                       AND datname = current_database()""")[0][0] == 1)
        mover.commit()
        retrier.join(10)
    finally:
        mover.close()
    assert outcome["retried"] == [letter]
    assert part_of(letter) == '"WorkerJobLive"'
    [job] = q.claim("w", types=["H_MOVED"])
    assert job.id == letter


def _until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_hot_statements_lock_no_history_partition():
    for i in range(3):  # partitions of other days, as a week of history has
        sql("SELECT skiplock_history_partition(now() - make_interval(days => :d))", d=i + 2)
    q.enqueue("H_HOT", {})
    engine = db.get_engine()
    with engine.connect() as conn:
        claimed = conn.execute(statements.CLAIM, {"worker_id": "w", "limit": 1,
                                                  "children": 1}).fetchall()
        conn.execute(statements.HEARTBEAT, {
            "ids": "{" + claimed[0].id + "}", "lockers": "{w}", "attempts": "{1}",
            "progress": "{}", "messages": "{}", "write": "{t}", "checkpoints": "{}"})
        conn.execute(statements.COMPLETE, {"id": claimed[0].id, "locked_by": "w",
                                           "attempts": 1, "result": None})
        locked = conn.execute(text(
            """SELECT c.relname FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
               WHERE l.pid = pg_backend_pid() AND c.relname LIKE 'WorkerJobHistory%'""")).all()
        conn.rollback()
    assert locked == []


def test_the_live_functions_name_the_live_part():
    assert sql("""SELECT proname FROM pg_proc WHERE proname LIKE 'skiplock%'
                  AND prosrc LIKE '%"WorkerJob"%'""") == []


def test_the_mover_leaves_what_live_state_still_needs():
    # A parent whose dependent waits, a dead letter that holds its sequence, a scoped
    # key inside its window: each stays live.
    parent = q.enqueue("H_PARENT", {})
    child = q.enqueue("H_CHILD", {}, depends_on=[parent], on_parent_failure="hold")
    [job] = q.claim("w", types=["H_PARENT"])
    q.fail(job, "no", retry=False)
    held = q.enqueue("H_SEQ", {}, sequence="line-1", max_attempts=1)
    q.enqueue("H_SEQ", {}, sequence="line-1")
    [job] = q.claim("w", types=["H_SEQ"])
    q.fail(job, "no")
    scoped = q.enqueue("H_UNIQUE", {}, idempotency_key="u1", unique_for="1h")
    [job] = q.claim("w", types=["H_UNIQUE"])
    q.complete(job)
    archive()
    for job_id in (parent, held, scoped):
        assert part_of(job_id) == '"WorkerJobLive"', job_id
    assert q.enqueue("H_UNIQUE", {}, idempotency_key="u1", unique_for="1h") == scoped
    assert q.get_job(child).status == "PENDING"


def test_cleanup_drops_whole_partitions_and_keeps_the_rest():
    old = finish("H_OLD")
    recent = finish("H_NEW")
    ten_days_ago = sql("SELECT skiplock_history_partition(now() - interval '10 days')")[0][0]
    sql("""UPDATE "WorkerJob" SET "archivedAt" = now() - interval '10 days',
                  "completedAt" = now() - interval '10 days' WHERE id = :id""", id=old)
    assert part_of(old) == f'"{ten_days_ago}"'
    report: list[str] = []
    q.cleanup("7d", report=report)
    assert f"dropped history partition {ten_days_ago}" in report, report
    assert q.get_job(old) is None and q.get_job(recent) is not None
    names = [p.name for p in history.partitions()]
    assert ten_days_ago not in names and len(names) >= history.AHEAD + 1
    assert history.drop_older(timedelta(days=7)).dropped == []


def test_a_detach_that_waits_for_an_older_transaction_is_left_to_the_next_cleanup(monkeypatch):
    # A REPEATABLE READ transaction that read "WorkerJob" could still read the old
    # partition: its detach waits for it, and cleanup, which waited as long as it
    # lasted, now goes on and drops the partition the next time.
    monkeypatch.setattr(history, "DETACH_WAIT_S", 0.3)
    old = finish("H_WAIT")
    ten_days_ago = sql("SELECT skiplock_history_partition(now() - interval '10 days')")[0][0]
    sql("""UPDATE "WorkerJob" SET "archivedAt" = now() - interval '10 days',
                  "completedAt" = now() - interval '10 days' WHERE id = :id""", id=old)
    reader = psycopg2.connect(libpq_dsn(database_url()))
    try:
        reader.set_session(isolation_level="REPEATABLE READ")
        with reader.cursor() as cur:
            cur.execute('SELECT count(*) FROM "WorkerJob"')
        report: list[str] = []
        q.cleanup("7d", report=report)
        assert any(line.startswith(f"detached history partition {ten_days_ago}: an older "
                                   "transaction") for line in report), report
        assert [p.name for p in history.partitions() if p.detaching] == [ten_days_ago]
        assert q.get_job(old) is None  # a reader that begins now no longer sees it
    finally:
        reader.close()
    report = []
    q.cleanup("7d", report=report)
    assert f"finished the detach of history partition {ten_days_ago}" in report, report
    assert ten_days_ago not in [p.name for p in history.partitions()]


def test_edges_stay_while_their_jobs_are_kept_and_go_with_their_partition():
    from skiplock.queue_core.features import dependencies

    parent = finish("H_EDGE_PARENT")
    child = q.enqueue("H_EDGE_CHILD", {}, depends_on=[parent])
    [job] = q.claim("w", types=["H_EDGE_CHILD"])
    assert q.complete(job)
    assert archive() == 2
    assert [e.id for e in dependencies.parents(child)] == [parent]
    assert [e.id for e in dependencies.dependents(parent)] == [child]
    sql("SELECT skiplock_history_partition(now() - interval '10 days')")
    sql("""UPDATE "WorkerJob" SET "archivedAt" = now() - interval '10 days'
           WHERE id IN (:a, :b)""", a=parent, b=child)
    dropped = history.drop_older(timedelta(days=7))
    assert len(dropped.dropped) == 1 and dropped.edges == 1
    assert sql('SELECT count(*) FROM "WorkerJobDependency"') == [(0,)]


def test_a_pool_moves_its_finished_jobs_to_history(start_pool, jobs):  # noqa: F811 (fixtures)
    # Every master runs the mover (pool/history.py); here with a hot retention of 0.
    done = q.enqueue("TEST_RECORD", {})
    start_pool("--concurrency", "1", env={"PGOPTIONS": "-c skiplock.history_after=0"})
    wait_for(lambda: part_of(done).startswith('"WorkerJobHistory_'), 30,
             "the finished job to move to history")
    assert q.get_job(done).status == "COMPLETED"
