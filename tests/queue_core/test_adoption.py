"""`skiplock migrate` in databases it did not make: the seed's (Prisma made "WorkerJob" there
first), an application's own, and one an older skiplock migrated.

The seed's database is built from tests/prisma/seed/prisma_ddl.sql, the DDL Prisma emits for the
seed's models. What the real Prisma client does before and after is tests/prisma/.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from skiplock.cli import main
from skiplock.queue_core import claim
from skiplock.queue_core.database import migrate
from skiplock.queue_core.database.scratch import scratch_database
from tests.packaging.snippets import snippet
from tests.queue_core.helpers import empty, run_script, schema_of, sql

SEED_DDL = (Path(__file__).resolve().parents[1] / "prisma" / "seed" / "prisma_ddl.sql").read_text()
# What the seed's database has besides "WorkerJob": its own users, and the cascade to them.
# The foreign key an application adds to its own users, as docs/schema.md gives it.
USER_FOREIGN_KEY = snippet("user-foreign-key", "docs/schema.md")
# What the seed's database has besides "WorkerJob": its own users, and the cascade to them.
SEED_USER_DDL = """
CREATE TABLE "User" ("id" TEXT NOT NULL, "email" TEXT NOT NULL, CONSTRAINT "User_pkey" PRIMARY KEY ("id"));
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
""" + USER_FOREIGN_KEY
# Rows as the seed's service writes them: Prisma's cuid ids, UTC wall-clock times in
# TIMESTAMP(3), one job pending, one its old worker left PROCESSING, one finished.
SEED_ROWS = """
INSERT INTO "User" (id, email) VALUES ('cmuser1', 'ada@example.com');
INSERT INTO "WorkerJob" (id, type, payload, status, "availableAt", "createdAt", "userId",
                         "idempotencyKey", attempts, "lockedAt", "lockedBy", "completedAt")
VALUES ('cmjob1', 'INTERPRET_EVENT', '{"eventId": "e1"}', 'PENDING', '2026-12-01 08:00:00.123',
        '2026-12-01 08:00:00.123', 'cmuser1', 'interpret:e1', 0, NULL, NULL, NULL),
       ('cmjob2', 'DETECT_PATTERNS', '{"userId": "cmuser1"}', 'PROCESSING', '2026-12-01 08:00:01',
        '2026-12-01 08:00:01', 'cmuser1', NULL, 1, '2026-12-01 08:00:02', 'node-worker-1', NULL),
       ('cmjob3', 'GENERATE_REVIEW', '{}', 'COMPLETED', '2026-11-30 08:00:00',
        '2026-11-30 08:00:00', NULL, 'review:x', 1, NULL, NULL, '2026-11-30 08:00:05');
"""

runner = CliRunner()


@pytest.fixture
def database() -> Iterator[str]:
    """An empty database of its own, the process's DATABASE_URL while the test runs."""
    with scratch_database("skiplock_adopt") as url:
        empty(url)
        yield url


def migrate_cli(*args: str) -> tuple[int, list[str]]:
    result = runner.invoke(main, ["migrate", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stderr.strip().splitlines()


def same(expected: str, actual: str) -> None:
    diff = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(), lineterm="", n=1))
    assert diff == [], "\n".join(diff)


def test_a_table_prisma_made_is_adopted_in_place_and_keeps_its_rows(database):
    run_script(database, SEED_DDL + SEED_ROWS)
    code, lines = migrate_cli()
    assert code == 0, lines
    assert lines[0].startswith('adopted the "WorkerJob" that Prisma made: 3 jobs kept '
                               "(1 pending, 1 processing)"), lines
    assert len(lines) == 2 and "is at revision" in lines[1]
    times = sql("""SELECT id, type, status::text, "availableAt" AT TIME ZONE 'UTC', "completedAt"
                   AT TIME ZONE 'UTC', "userId", "lockedBy" FROM "WorkerJob" ORDER BY id""")
    assert [(r[0], r[1], r[2], str(r[3]), str(r[4]), r[5], r[6]) for r in times] == [
        ("cmjob1", "INTERPRET_EVENT", "PENDING", "2026-12-01 08:00:00.123000", "None", "cmuser1",
         None),
        ("cmjob2", "DETECT_PATTERNS", "PROCESSING", "2026-12-01 08:00:01", "None", "cmuser1",
         "node-worker-1"),
        ("cmjob3", "GENERATE_REVIEW", "COMPLETED", "2026-11-30 08:00:00", "2026-11-30 08:00:05",
         None, None)]
    # The pending job runs; any type casts to the open "JobType"; the cascade is the seed's.
    assert [job.id for job in claim("w1", limit=5)] == ["cmjob1"]
    sql("""INSERT INTO "WorkerJob" (type, payload) VALUES (CAST('SEND_EMAIL' AS "JobType"), '{}')""")
    sql("""DELETE FROM "User" WHERE id = 'cmuser1'""")
    assert [r[0] for r in sql('SELECT type FROM "WorkerJob" ORDER BY type')] == [
        "GENERATE_REVIEW", "SEND_EMAIL"]
    assert migrate_cli("--check")[0] == 0
    adopted = schema_of(database)
    # The same schema as skiplock's own table in an application that has the seed's "User".
    with scratch_database("skiplock_fresh") as fresh:
        run_script(fresh, SEED_USER_DDL)
        same(schema_of(fresh), adopted)


def test_an_adopted_table_goes_to_history_online_and_its_finished_rows_move(database):
    # A table skiplock runs (at the revision before history) with the seed's rows: the
    # online steps first (column, CHECK validated outside the migration's transaction),
    # then the partitioning; the finished row moves by the mover, readable throughout.
    from skiplock.queue_core.features import history

    run_script(database, SEED_DDL + SEED_ROWS)
    migrate.upgrade(database, migrate.HISTORY_BEFORE)
    migrate.upgrade(database)
    assert sql("""SELECT convalidated FROM pg_constraint
                  WHERE conname = 'WorkerJob_live_check'""") == [(True,)]
    assert history.move(0, 0) == 1
    assert sql("""SELECT id, tableoid::regclass::text LIKE '"WorkerJobHistory_%' FROM "WorkerJob"
                  ORDER BY id""") == [("cmjob1", False), ("cmjob2", False), ("cmjob3", True)]
    assert sql("""SELECT id FROM "WorkerJob" WHERE "idempotencyKey" = 'review:x'""") == [
        ("cmjob3",)]
    sql("""DELETE FROM "User" WHERE id = 'cmuser1'""")  # the seed's cascade, both parts
    assert sql('SELECT id FROM "WorkerJob"') == [("cmjob3",)]


def test_the_printed_prisma_upgrade_does_what_migrate_does(database):
    printed = runner.invoke(main, ["migrate", "--sql", "--from", "prisma"])
    assert printed.exit_code == 0, printed.output
    run_script(database, SEED_DDL + SEED_ROWS)
    run_script(database, printed.stdout)
    assert migrate_cli("--check")[0] == 0
    assert sql('SELECT count(*) FROM "WorkerJob"') == [(3,)]
    with scratch_database("skiplock_online") as online:
        empty(online)
        run_script(online, SEED_DDL + SEED_ROWS)
        assert migrate_cli()[0] == 0
        expected = schema_of(online)
    same(expected, schema_of(database))


def test_a_job_table_that_is_not_the_seeds_is_refused_and_left_as_it_was(database):
    run_script(database, 'CREATE TABLE "WorkerJob" (id text PRIMARY KEY, kind text);'
                         """INSERT INTO "WorkerJob" VALUES ('1', 'mine')""")
    before = schema_of(database)
    code, lines = migrate_cli()
    assert code == 1 and len(lines) == 1, lines
    assert 'cannot adopt the table "WorkerJob"' in lines[0] and "type, payload, status" in lines[0]
    same(before, schema_of(database))
    assert sql('SELECT * FROM "WorkerJob"') == [("1", "mine")]


APPLICATION = """
CREATE TABLE "User" (id text PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE "Event" (id serial PRIMARY KEY, "userId" text REFERENCES "User"(id), body text);
CREATE TABLE "Pattern" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('a1b2c3d4e5f6');
INSERT INTO "User" VALUES ('u1', 'ada@example.com');
INSERT INTO "Event" ("userId", body) VALUES ('u1', 'hello');
"""
APPLICATION_TABLES = ("User", "Event", "Pattern", "alembic_version")


def application_state() -> tuple[object, ...]:
    return (sql('SELECT * FROM "User"'), sql('SELECT * FROM "Event"'),
            sql('SELECT * FROM "Pattern"'), sql("SELECT * FROM alembic_version"))


def test_an_applications_own_tables_and_alembic_are_left_untouched(database):
    run_script(database, APPLICATION)
    schema, rows = schema_of(database, *APPLICATION_TABLES), application_state()
    code, lines = migrate_cli()
    assert code == 0, lines
    same(schema, schema_of(database, *APPLICATION_TABLES))
    assert application_state() == rows
    assert migrate.current_revisions(database) == [migrate.queue_head()]
    # The demo's "User" would be a second one: refused in one line, nothing changed.
    everything = schema_of(database)
    code, lines = migrate_cli("--demo")
    assert code == 1 and len(lines) == 1, lines
    assert 'already has "User", "Event", "Pattern"' in lines[0] and "of its own" in lines[0]
    same(everything, schema_of(database))


def test_a_database_an_older_skiplock_migrated_moves_its_revision_and_keeps_the_demo(database):
    # As the last skiplock that kept its revision in alembic_version left it: at that
    # revision, the domain tables beside the queue, and the foreign key it made to their "User".
    last = migrate.LEGACY_REVISIONS[-1]
    migrate.upgrade(database, last)
    migrate.upgrade(database, migrate.demo_head())
    run_script(database, f"""
        ALTER TABLE skiplock_version RENAME TO alembic_version;
        ALTER TABLE alembic_version RENAME CONSTRAINT skiplock_version_pkc TO alembic_version_pkc;
        DELETE FROM alembic_version WHERE version_num = '{migrate.demo_head()}';
    """ + USER_FOREIGN_KEY)
    before = schema_of(database)
    code, lines = migrate_cli("--check")
    assert code == 1 and f"at revision {last}" in lines[0], lines
    same(before, schema_of(database))
    code, lines = migrate_cli()
    assert code == 0, lines
    assert migrate.current_revisions(database) == sorted([migrate.queue_head(),
                                                          migrate.demo_head()])
    assert sql("SELECT to_regclass('alembic_version')") == [(None,)]
    # The schema a new skiplock makes with the demo, and the foreign key the old one made.
    with scratch_database("skiplock_demo_now", demo=True) as fresh:
        run_script(fresh, USER_FOREIGN_KEY)
        expected = schema_of(fresh)
    same(expected, schema_of(database))


def test_check_changes_nothing_in_a_database_prisma_made(database):
    run_script(database, SEED_DDL + SEED_ROWS)
    before = schema_of(database)
    code, lines = migrate_cli("--check")
    assert code == 1 and len(lines) == 1 and "at revision none" in lines[0], lines
    same(before, schema_of(database))


def test_migrate_creates_only_the_queues_own_tables(database):
    assert migrate_cli()[0] == 0
    # History's partitions are named by the time they hold (migration 0022_history).
    tables = [r[0] for r in sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                "AND tablename NOT LIKE 'WorkerJobHistory\\_%'")]
    assert sorted(tables) == sorted(migrate.QUEUE_TABLES)


def test_the_readme_names_every_table_migrate_creates():
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = re.search(r"<!-- objects -->(.*?)<!-- /objects -->", readme, re.S)
    assert listed, "README.md lists no objects"
    assert sorted(re.findall(r'`"?([\w]+)"?`', listed.group(1))) == sorted(migrate.QUEUE_TABLES)
    functions = [r[0] for r in sql("SELECT proname FROM pg_proc WHERE proname LIKE 'skiplock%'")]
    assert len(functions) == 30 and "thirty functions named `skiplock_*`" in readme
