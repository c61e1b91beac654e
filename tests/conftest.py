"""One real PostgreSQL database for the whole run, emptied before each test; the lanes.

See `queue_core/database/scratch.py` for which server: TEST_DATABASE_URL, DATABASE_URL,
127.0.0.1:5432 if it answers, else the embedded cluster (SKIPLOCK_HOME, else the
per-user default, as every command finds it). The run's database is
created, migrated, exported as DATABASE_URL for subprocesses, and dropped.

Lanes (docs/development.md): `make test` runs every test; `make test-fast`
leaves out the tests marked `pool` (they start real `skiplock worker`
processes) and `slow` (seconds each for another reason). The marks are given
here (pytest_collection_modifyitems): by the fixtures a test uses, so that a new
pool test is in its lane without anyone remembering to mark it, and by a list
of files and tests. An unmarked test that turns out slow is named at the end of
the run, so that the list does not fall behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath

import pytest
from sqlalchemy import Connection, text

from skiplock.queue_core.database import db
from skiplock.queue_core.database.scratch import copies_of_templates, scratch_database
from skiplock.queue_core.features import type_policies


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    # The tests that need databases of their own ask for dozens: copies of one migrated
    # database (of each kind) cost a fraction of the migrations.
    # The built-in handlers' demo domain too: the handler tests run the six job types.
    with copies_of_templates(), scratch_database("skiplock_test", demo=True) as url:
        yield url


@pytest.fixture(autouse=True)
def clean_tables(database_url: str) -> None:
    """Every test starts from empty tables (the schema stays), and this process reads
    the per-type policies afresh at its next enqueue (type_policies.py keeps a copy)."""
    empty_written_tables()
    type_policies.forget_overrides()


def empty_written_tables() -> list[str]:
    """Empty the tables that hold rows; return their names.

    A TRUNCATE costs over 20 ms however few rows it empties (each table and
    index gets a new file), which the hundreds of tests that write a row or two
    would pay each; a DELETE of those rows costs well under a millisecond. So a
    table of a few pages is emptied by a DELETE that fires no trigger and checks
    no foreign key (`session_replication_role = replica`: every table that holds
    rows is emptied, so none is left pointing into another), and a larger one by
    a TRUNCATE, which gives its file back, so that no table grows over the run.
    Which tables hold rows is asked of those that have a page at all (a table
    never written has none), in one query. Without the superuser that the
    replica role needs, every such table is truncated. Nothing has to be marked,
    so no test can be left with another's rows.
    """
    with db.get_engine().begin() as conn:
        holding = conn.execute(text(
            "SELECT quote_ident(tablename), pg_relation_size(format('%I.%I', schemaname, "
            "tablename)) <= :few FROM pg_tables "
            "WHERE schemaname = 'public' AND tablename <> 'skiplock_version' "
            "AND pg_relation_size(format('%I.%I', schemaname, tablename)) > 0 "
            "AND query_to_xml(format('SELECT FROM %I.%I LIMIT 1', schemaname, tablename), "
            "false, true, '')::text <> ''"), {"few": _FEW_PAGES * 8192}).all()
        if not holding:
            return []
        small = [name for name, few in holding if few and _may_skip_triggers(conn)]
        large = [name for name, _ in holding if name not in small]
        if small:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("; ".join(f"DELETE FROM {name}" for name in small)))
            conn.execute(text("SET LOCAL session_replication_role = DEFAULT"))
        if large:
            conn.execute(text(f"TRUNCATE {', '.join(large)} CASCADE"))
    return [name for name, _ in holding]


# Tables up to this many pages are emptied by DELETE (a few hundred jobs at most).
_FEW_PAGES = 32
_superuser: list[bool] = []


def _may_skip_triggers(conn: Connection) -> bool:
    """Whether this session may set session_replication_role (a superuser's)."""
    if not _superuser:
        _superuser.append(bool(conn.execute(text(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()))
    return _superuser[0]


@pytest.fixture
def user_foreign_key(database_url: str) -> Iterator[None]:
    """The foreign key an application adds from a job to its users, as docs/schema.md says
    (skiplock's "userId" has none of its own); here to the demo's "User"."""
    from tests.packaging.snippets import snippet

    with db.get_engine().begin() as conn:
        conn.execute(text(snippet("user-foreign-key", "docs/schema.md")))
    try:
        yield
    finally:
        with db.get_engine().begin() as conn:
            conn.execute(text('ALTER TABLE "WorkerJob" DROP CONSTRAINT "WorkerJob_userId_fkey"'))


# What puts a test in a lane: first the fixtures it uses. `start_pool` starts
# `skiplock worker` processes (tests/pool/conftest.py, whose fixtures the feature
# tests import, and tests/dashboard/conftest.py); `browser` is Chromium.
POOL_FIXTURES = frozenset({"start_pool"})
SLOW_FIXTURES = frozenset({"browser", "start_dashboard"})
# Then where it lives, for the tests that start those processes themselves or take
# seconds for another reason: a file (a glob names several) or one test, from the
# repository's root.
POOL_TESTS = (
    "tests/handlers/test_chain_pool.py",
    "tests/ops/test_least_privilege.py",
    "tests/ops/test_pool_ops.py",
    "tests/packaging/test_first_steps.py",
    "tests/queue_core/test_secrets.py::test_a_worker_given_a_password_on_its_command_line_never_shows_it",
)
SLOW_TESTS = (
    "tests/dashboard/test_dashboard_chromium.py",  # pytest runs of its own
    "tests/features/test_pgbouncer.py",  # a pgbouncer of its own
    "tests/packaging/test_wheel.py",  # builds a wheel, installs it into new virtualenvs
    "tests/prisma/*",  # npm, Node and the Prisma Client
    "tests/queue_core/test_cli_fuzz.py",  # fuzzed command lines, many through processes
    "tests/queue_core/test_embedded*.py",  # initdb and clusters of their own
    "tests/bench/test_netns.py",  # network namespaces, and a connection that must time out
    # Processes of their own, racing on one key or one table; a Ctrl-C mid-backfill.
    "tests/queue_core/test_claim.py::test_concurrent_claimers_take_each_job_exactly_once",
    "tests/queue_core/test_enqueue.py::test_concurrent_enqueues_of_one_key_give_one_row_and_one_id",
    "tests/ops/test_backfill.py::test_a_backfill_interrupted_by_ctrl_c_then_rerun_adds_each_job_once",
    # Two collections of the suite in pytest processes of their own.
    "tests/packaging/test_lanes.py::test_the_fast_lane_leaves_out_the_pool_and_slow_tests_and_keeps_the_rest",
    # Whole schemas built in databases of their own (compared through pg_dump, or
    # migrated down and up again).
    "tests/queue_core/test_adoption.py",
    "tests/queue_core/test_migrate_cli.py::test_the_printed_ddl_builds_the_same_schema_as_migrate",
    "tests/queue_core/test_wake.py::test_the_downgrade_puts_back_the_trigger_that_fires_for_every_insert",
    # Hundreds of fuzzed requests; timeouts waited out in full, by design.
    "tests/dashboard/test_dashboard_hostile.py::test_every_route_and_parameter_fuzzed_answers_without_a_500",
    "tests/features/test_wait.py::test_a_row_lock_on_the_job_does_not_outlast_the_timeout",
    "tests/queue_core/test_enqueue_in_transactions.py::test_a_delayed_enqueue_at_the_end_of_a_long_transaction_counts_from_its_statement",
    "tests/pool/test_master_decisions.py::test_children_claim_only_while_their_master_keeps_leases",
    # Subprocesses of their own (the dashboard refusing to start, the CLI) or the whole
    # demo domain drained in process: a second or so each, which the fast lane's
    # minute cannot hold since issue 30's tests joined it.
    "tests/dashboard/test_dashboard_safety.py::test_a_non_local_bind_without_credentials_refuses_to_start",
    "tests/handlers/test_chain_inline.py::test_demo_data_drains_into_complete_chains",
    "tests/handlers/test_chain_inline.py::test_the_demo_weekly_reviews_wait_for_their_daily_reviews",
    "tests/queue_core/test_cli_core.py::test_enqueue_prints_the_job_id_alone",
    "tests/queue_core/test_migrate_cli.py::test_check_says_in_one_line_when_the_database_is_behind",
    "tests/ops/test_cli_contract.py::test_a_database_that_is_down_is_one_line_without_a_password",
    "tests/queue_core/test_secrets.py::test_no_printing_path_shows_the_password",
    "tests/features/test_dependencies.py::test_fan_in_of_many_parents_ended_in_many_transactions",
    # Timeouts of half a second or more, waited out by design (a job's, a wait's, a
    # lease's gone stale): over half a second each, which the fast lane goes without.
    "tests/pool/test_master_decisions.py::test_a_job_killed_for_its_timeout_while_its_row_is_locked_is_settled_as_a_timeout",
    "tests/features/test_wait.py::test_a_retry_is_not_an_end_but_a_dead_letter_and_a_cancel_are",
    "tests/pool/test_pool_database.py::test_observers_hear_why_each_child_ended_and_how_each_job_did",
    "tests/applications/test_asyncio.py::test_await_result_times_out_at_its_timeout_and_says_how_the_job_is",
)
# An unmarked test slower than this is named at the end of the run.
SLOW_SECONDS = 2.0
_unmarked_slow: list[tuple[float, str]] = []


def _listed(item: pytest.Item, entries: tuple[str, ...]) -> bool:
    path = PurePath(item.path.relative_to(item.config.rootpath).as_posix())
    test = item.nodeid.split("[", 1)[0]
    return any(test == entry if "::" in entry else path.match(entry) for entry in entries)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & POOL_FIXTURES or _listed(item, POOL_TESTS):
            item.add_marker(pytest.mark.pool)
        if used & SLOW_FIXTURES or _listed(item, SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


_durations: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Sums each test's set-up, call and teardown (what `--durations` shows)."""
    took = _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.when == "teardown" and took > SLOW_SECONDS \
            and "pool" not in report.keywords and "slow" not in report.keywords:
        _unmarked_slow.append((took, report.nodeid))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unmarked_slow:
        terminalreporter.section("unmarked slow tests")
        terminalreporter.write_line(
            f"these took over {SLOW_SECONDS:.0f} s without a `pool` or `slow` mark, and so run "
            "in `make test-fast`; mark them (tests/conftest.py says how) or make them quicker:")
        for took, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"  {took:5.1f} s  {nodeid}")
