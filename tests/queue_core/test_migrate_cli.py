"""`skiplock migrate --sql` and `--check`: for teams that own their schema, and for deploy scripts."""

from __future__ import annotations

import difflib

import psycopg2
import pytest
from click.testing import CliRunner

from skiplock.cli import main
from skiplock.queue_core.database import migrate
from skiplock.queue_core.database.scratch import scratch_database
from skiplock.queue_core.database.urls import libpq_dsn
from tests.queue_core.helpers import empty, schema_of

runner = CliRunner()


def test_the_printed_ddl_builds_the_same_schema_as_migrate():
    printed = runner.invoke(main, ["migrate", "--sql"])
    assert printed.exit_code == 0, printed.output
    with scratch_database("skiplock_migrated") as migrated:
        expected = schema_of(migrated)  # scratch databases are made by `migrate`
    with scratch_database("skiplock_ddl") as mine:
        empty(mine)
        with psycopg2.connect(libpq_dsn(mine)) as conn, conn.cursor() as cur:
            cur.execute(printed.stdout)
        assert runner.invoke(main, ["migrate", "--check"]).exit_code == 0
        diff = list(difflib.unified_diff(expected.splitlines(),
                                         schema_of(mine).splitlines(), lineterm="", n=1))
        assert diff == [], "\n".join(diff)


def test_check_says_in_one_line_when_the_database_is_behind():
    with scratch_database("skiplock_behind") as url:
        empty(url)
        migrate.upgrade(url, "0003_ops")
        behind = runner.invoke(main, ["migrate", "--check"])
        assert behind.exit_code == 1
        [line] = behind.stderr.strip().splitlines()
        assert "0003_ops" in line and migrate.queue_head() in line and "skiplock migrate" in line
        # --sql --from prints only what is missing, and applying it brings the database level.
        rest = runner.invoke(main, ["migrate", "--sql", "--from", "0003_ops"])
        assert rest.exit_code == 0 and 'CREATE TABLE "WorkerJob" (\n' not in rest.stdout
        with psycopg2.connect(libpq_dsn(url)) as conn, conn.cursor() as cur:
            cur.execute(rest.stdout)
        assert runner.invoke(main, ["migrate", "--check"]).exit_code == 0


def test_check_on_a_database_never_migrated_exits_1():
    with scratch_database("skiplock_never") as url:
        empty(url)
        result = runner.invoke(main, ["migrate", "--check"])
        assert result.exit_code == 1 and "at revision none" in result.stderr


@pytest.mark.parametrize("args", [["--from", "0003_ops"], ["--sql", "--check"]])
def test_flags_that_do_not_go_together_are_usage_errors(args):
    assert runner.invoke(main, ["migrate", *args]).exit_code == 2


def test_an_unknown_revision_is_one_clear_line():
    result = runner.invoke(main, ["migrate", "--sql", "--from", "nope"])
    assert result.exit_code == 1 and "no migration 'nope'" in result.stderr
    assert "Traceback" not in result.output
