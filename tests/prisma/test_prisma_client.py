"""The seed's service writes and reads jobs through a real Prisma Client 7; skiplock runs them.

- In the seed's own database (made from the DDL Prisma emits for the seed's models), the
  client generated from the seed's schema writes jobs before and after `skiplock migrate`
  adopts the table; a pool runs every one of them to COMPLETED, and the client reads them back.
- The same client on a database skiplock made from nothing.
- A client generated from what `skiplock prisma-schema` prints writes and reads every column
  of the table, and reads rows of any job type, which the seed's own client cannot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import skiplock
from skiplock.cli import main
from skiplock.queue_core.database.scratch import scratch_database
from tests.prisma import client as prisma
from tests.queue_core.helpers import empty, run_script, sql
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]
SEED_DDL = (prisma.HERE / "seed" / "prisma_ddl.sql").read_text()
runner = CliRunner()


@pytest.fixture(scope="module")
def seed_client() -> prisma.Client:
    prisma.install()
    return prisma.generate(prisma.models_of(prisma.SEED_SCHEMA))


@pytest.fixture
def seed_database() -> Iterator[str]:
    """An empty database as the seed's service has it before skiplock: Prisma's tables."""
    with scratch_database("skiplock_prisma") as url:
        empty(url)
        run_script(url, SEED_DDL)
        yield url


@pytest.fixture
def skiplock_database() -> Iterator[str]:
    with scratch_database("skiplock_prisma_fresh") as url:
        yield url


def job(job_type: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "workerJob", "op": "create",
            "args": {"data": {"type": job_type, "payload": payload, **fields}}}


def call(model: str, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": model, "op": op, "args": args or {}}


@contextlib.contextmanager
def running_pool(database_url: str, tmp_path: Path, handlers: str = "tests.prisma.handlers",
                 concurrency: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    """A real pool (`skiplock worker`) with `handlers`, stopped on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPLOCK_")}
    env.update(DATABASE_URL=database_url, PYTHONPATH=str(REPO), SKIPLOCK_HOME=str(tmp_path))
    log = tmp_path / "pool.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "skiplock", "worker", "--concurrency",
                                 str(concurrency), "--handlers", handlers], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
            assert proc.poll() is None, log.read_text()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    assert "Traceback" not in log.read_text(), log.read_text()


def wait_until_done(proc: subprocess.Popen[bytes]) -> None:
    wait_for(lambda: sql("SELECT count(*) FROM \"WorkerJob\" WHERE status::text "
                         "NOT IN ('COMPLETED', 'DEAD_LETTER')")[0][0] == 0
             or proc.poll() is not None, 60, "the pool to run every job")


def run_pool_until_done(database_url: str, tmp_path: Path) -> None:
    """A real pool, with the seed team's handlers, until no job is left to run."""
    with running_pool(database_url, tmp_path) as proc:
        wait_until_done(proc)


def test_the_seeds_client_writes_before_and_after_migrate_and_a_pool_runs_every_job(
        seed_client: prisma.Client, seed_database: str, tmp_path: Path) -> None:
    before = seed_client.run(seed_database, [
        call("user", "create", {"data": {"id": "u1", "email": "ada@example.com"}}),
        job("INTERPRET_EVENT", {"eventId": "e1"}, userId="u1", idempotencyKey="interpret:e1"),
        job("DETECT_PATTERNS", {"userId": "u1", "triggerEventId": "e1", "interpretationId": "i1"},
            userId="u1", priority=5),
        job("INTERPRET_EVENT", {"eventId": "e1"}, idempotencyKey="interpret:e1"),
    ])
    assert [r.get("status") for r in before[1:3]] == ["PENDING", "PENDING"]
    assert before[3]["error"] == "P2002", before[3]  # the idempotency key, as the seed expects

    result = runner.invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith('adopted the "WorkerJob" that Prisma made: 2 jobs kept')

    after = seed_client.run(seed_database, [
        job("GENERATE_REVIEW", {"userId": "u1", "type": "DAILY", "periodKey": "2026-12-01",
                                "timezone": "Europe/Paris"}, userId="u1",
            idempotencyKey="review:u1:DAILY:2026-12-01"),
        job("INTERPRET_EVENT", {"eventId": "e1"}, idempotencyKey="interpret:e1"),
        call("workerJob", "findUnique", {"where": {"idempotencyKey": "interpret:e1"}}),
        call("workerJob", "groupBy", {"by": ["status"], "_count": True}),
        call("workerJob", "count", {"where": {"type": "INTERPRET_EVENT"}}),
        call("workerJob", "updateMany", {"where": {"type": "DETECT_PATTERNS"},
                                         "data": {"priority": 9}}),
        call("workerJob", "findMany", {"where": {"status": {"in": ["PENDING", "PROCESSING"]}},
                                       "orderBy": {"priority": "desc"}}),
    ])
    created, duplicate, found, grouped, counted, updated, pending = after
    assert created["status"] == "PENDING" and duplicate["error"] == "P2002", after
    assert found["id"] == before[1]["id"] and found["payload"] == {"eventId": "e1"}
    assert grouped == [{"_count": 3, "status": "PENDING"}]
    assert counted == 1 and updated == {"count": 1}
    assert [(j["type"], j["priority"]) for j in pending] == [
        ("DETECT_PATTERNS", 9), ("INTERPRET_EVENT", 0), ("GENERATE_REVIEW", 0)]

    run_pool_until_done(seed_database, tmp_path)
    done = seed_client.run(seed_database, [
        call("workerJob", "findMany", {"orderBy": {"createdAt": "asc"}}),
        call("workerJob", "groupBy", {"by": ["status", "type"], "_count": True,
                                      "orderBy": {"type": "asc"}}),
        call("user", "findUnique", {"where": {"id": "u1"}, "include": {"jobs": True}}),
    ])
    jobs, grouped, user = done
    assert [(j["status"], j["attempts"], j["lastError"]) for j in jobs] == [
        ("COMPLETED", 1, None)] * 3, jobs
    assert all(j["completedAt"] and j["startedAt"] and j["lockedBy"] is None for j in jobs)
    assert [(g["type"], g["_count"]) for g in grouped] == [
        ("DETECT_PATTERNS", 1), ("GENERATE_REVIEW", 1), ("INTERPRET_EVENT", 1)]
    assert len(user["jobs"]) == 3  # the seed's relation, kept by the adoption


def test_the_seeds_client_on_a_database_skiplock_made(
        seed_client: prisma.Client, skiplock_database: str, tmp_path: Path) -> None:
    wrote = seed_client.run(skiplock_database, [
        job("INTERPRET_EVENT", {"eventId": "e9"}, idempotencyKey="interpret:e9"),
        job("INTERPRET_EVENT", {"eventId": "e9"}, idempotencyKey="interpret:e9"),
        job("GENERATE_TOMORROW_PLAN", {"userId": "u9", "reviewId": "r9",
                                       "targetDate": "2026-12-06"}, maxAttempts=5),
        call("workerJob", "count", {"where": {"status": "PENDING"}}),
        call("workerJob", "updateMany", {"where": {"type": "GENERATE_TOMORROW_PLAN"},
                                         "data": {"priority": 3}}),
    ])
    assert wrote[1]["error"] == "P2002" and wrote[3] == 2 and wrote[4] == {"count": 1}, wrote
    run_pool_until_done(skiplock_database, tmp_path)
    [jobs] = seed_client.run(skiplock_database, [
        call("workerJob", "findMany", {"orderBy": {"priority": "desc"}})])
    assert [(j["type"], j["status"], j["maxAttempts"], j["lastError"]) for j in jobs] == [
        ("GENERATE_TOMORROW_PLAN", "COMPLETED", 5, None), ("INTERPRET_EVENT", "COMPLETED", 3, None)]


def test_the_seeds_client_reads_counts_and_updates_jobs_in_history(
        seed_client: prisma.Client, skiplock_database: str) -> None:
    # Finished jobs moved to history (migration 0022_history, retention 0 here) are still
    # rows of "WorkerJob" to the seed's client: by id, by key, in counts, in updates; a
    # dead letter it makes PENDING again comes back to the live part, and a pool runs it.
    from skiplock import queue_core as q
    from skiplock.queue_core.features import history

    made = seed_client.run(skiplock_database, [
        job("INTERPRET_EVENT", {"eventId": f"h{i}"}, idempotencyKey=f"interpret:h{i}",
            maxAttempts=1) for i in range(3)])
    done, _, letter = (m["id"] for m in made)
    for claimed in q.claim("w", limit=3):
        if claimed.id == letter:
            q.fail(claimed, "boom")
        else:
            q.complete(claimed, {"ok": True})
    assert history.move(0, 0) == 3
    assert sql("""SELECT count(*) FROM "WorkerJobLive" """) == [(0,)]
    by_id, by_key, grouped, updated, revived, duplicate = seed_client.run(skiplock_database, [
        call("workerJob", "findUnique", {"where": {"id": done}}),
        call("workerJob", "findUnique", {"where": {"idempotencyKey": "interpret:h2"}}),
        call("workerJob", "groupBy", {"by": ["status"], "_count": True,
                                      "orderBy": {"status": "asc"}}),
        call("workerJob", "update", {"where": {"id": done}, "data": {"priority": 7}}),
        call("workerJob", "updateMany", {"where": {"status": "DEAD_LETTER"},
                                         "data": {"status": "PENDING", "attempts": 0}}),
        job("INTERPRET_EVENT", {"eventId": "h0"}, idempotencyKey="interpret:h0"),
    ])
    assert by_id["status"] == "COMPLETED" and by_id["completedAt"], by_id
    assert by_key["id"] == letter and by_key["status"] == "DEAD_LETTER", by_key
    assert grouped == [{"_count": 2, "status": "COMPLETED"},
                       {"_count": 1, "status": "DEAD_LETTER"}], grouped
    assert updated["priority"] == 7 and revived == {"count": 1}
    assert duplicate["error"] == "P2002", duplicate
    assert sql("""SELECT id, tableoid::regclass::text FROM "WorkerJob" WHERE status = 'PENDING'
               """) == [(letter, '"WorkerJobLive"')]
    assert [j.id for j in q.claim("w")] == [letter]


# A value of each column's SQL type, for a row that sets every column (the check
# constraints hold: a type of 1 to 200 characters, maxAttempts and concurrencyLimit >= 1,
# a sequence's policy and a rate in their forms).
def _value(name: str, sql_type: str) -> Any:
    if name == "status":
        return "DEAD_LETTER"
    if sql_type == "text":
        return {"type": "SEND_EMAIL", "userId": "u1", "sequencePolicy": "pass",
                "rate": "10/60s"}.get(name, f"{name} ☃ 'quoted'")
    if sql_type == "jsonb":
        return {"column": name, "list": [1, 2.5, None, "x"], "nested": {"deep": True}}
    if sql_type in ("integer", "bigint"):
        return {"priority": -3}.get(name, 7)
    if sql_type == "real":
        return 0.5
    if sql_type == "boolean":
        return True
    if sql_type == "timestamp with time zone":
        return "2026-12-01T08:00:00.123Z"
    raise AssertionError(f"a column of a type this test does not know: {name} {sql_type}")


@pytest.mark.parametrize("made_by", ["prisma", "skiplock"])
def test_a_client_from_the_printed_model_writes_and_reads_every_column(
        seed_client: prisma.Client, made_by: str) -> None:
    with scratch_database("skiplock_prisma_printed") as url:
        if made_by == "prisma":
            empty(url)
            run_script(url, SEED_DDL + """INSERT INTO "User" VALUES ('u1', 'ada@example.com');""")
            assert runner.invoke(main, ["migrate"]).exit_code == 0
        printed = runner.invoke(main, ["prisma-schema"])
        assert printed.exit_code == 0, printed.output
        schema = printed.stdout
        if made_by == "prisma":  # the relation the printed model declares needs its other side
            schema += '\nmodel User {\n  id    String @id\n  email String @unique\n' \
                      '  jobs  WorkerJob[]\n}\n'
        client = prisma.generate(schema, preview=("partialIndexes",))
        # Every column but "archivedAt", which the printed model leaves out (skiplock's own:
        # 'infinity' on a live row, which a JavaScript Date cannot hold).
        columns = sql("""SELECT column_name, data_type FROM information_schema.columns
                         WHERE table_name = 'WorkerJob' AND column_name <> 'archivedAt'
                         ORDER BY ordinal_position""")
        row = {name: _value(name, sql_type) for name, sql_type in columns}
        made, read = client.run(url, [
            call("workerJob", "create", {"data": row}),
            call("workerJob", "findUnique", {"where": {"id": row["id"]}}),
        ])
        # The client's answers carry a bigint as a string (JSON has no 64-bit integer).
        expected = {name: str(row[name]) if sql_type == "bigint" else row[name]
                    for name, sql_type in columns}
        assert made == read == expected, (made, expected)
        [(stored,)] = sql("""SELECT to_jsonb(j) FROM "WorkerJob" j WHERE id = :id""", id=row["id"])
        assert set(stored) == set(row) | {"archivedAt"} and stored["progress"] == 0.5
        # A row of any job type, which skiplock writes too: this client reads it, the seed's
        # (whose `type` is its six-value enum) cannot.
        other = skiplock.enqueue("BACKFILL_REVIEWS", {"period": "daily"})
        [found] = client.run(url, [call("workerJob", "findUnique", {"where": {"id": other}})])
        assert found["type"] == "BACKFILL_REVIEWS"
        [refused] = seed_client.run(url, [call("workerJob", "findMany")])
        assert "not found in enum 'JobType'" in refused["message"], refused


def test_the_seeds_client_writes_one_users_pattern_jobs_and_the_pool_never_runs_two_at_once(
        seed_client: prisma.Client, skiplock_database: str, tmp_path: Path) -> None:
    # The acceptance test of issue 30: no Python runs where the rows are written, yet
    # the built-in "one DETECT_PATTERNS per user at a time" holds (the pool's boot
    # writes it to "WorkerTypePolicy"; the insert trigger keys the Prisma rows).
    sql("CREATE TABLE policy_runs (job_id text, started timestamptz, finished timestamptz)")
    with running_pool(skiplock_database, tmp_path, "tests.prisma.policy_handlers", 3) as proc:
        wait_for(lambda: sql("""SELECT count(*) FROM "WorkerTypePolicy"
                                WHERE type = 'DETECT_PATTERNS'""")[0][0] == 1
                 or proc.poll() is not None, 30, "the pool to write its policies")
        wrote = seed_client.run(skiplock_database, [
            job("DETECT_PATTERNS", {"userId": "u1", "triggerEventId": f"e{i}",
                                    "interpretationId": f"i{i}"}) for i in range(8)]
            + [job("DETECT_PATTERNS", {"userId": "u2", "triggerEventId": "e9",
                                       "interpretationId": "i9"})])
        assert [w["status"] for w in wrote] == ["PENDING"] * 9, wrote
        wait_until_done(proc)
    runs = sql("SELECT count(*) FROM policy_runs")[0][0]
    overlaps = sql("""SELECT count(*) FROM policy_runs a JOIN policy_runs b
                      ON a.job_id < b.job_id AND a.started < b.finished
                         AND b.started < a.finished
                      JOIN "WorkerJob" ja ON ja.id = a.job_id
                      JOIN "WorkerJob" jb ON jb.id = b.job_id
                      WHERE ja.payload->>'userId' = 'u1' AND jb.payload->>'userId' = 'u1'""")
    assert (runs, overlaps[0][0]) == (9, 0)
    assert sql("""SELECT "concurrencyKey", "concurrencyLimit", count(*) FROM "WorkerJob"
                  WHERE status = 'COMPLETED' GROUP BY 1, 2 ORDER BY 1""") == [
        ("DETECT_PATTERNS:u1", 1, 8), ("DETECT_PATTERNS:u2", 1, 1)]
