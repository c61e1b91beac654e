"""The test lanes of docs/development.md, and the empty tables every test starts from
(tests/conftest.py)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import empty_written_tables
from tests.packaging.snippets import REPO
from tests.queue_core.helpers import sql

POOL_FILE = "tests/pool/test_pool_signals.py"  # start_pool
FEATURE_POOL_FILE = "tests/features/test_cancel_pool.py"  # start_pool, imported from tests/pool
BROWSER_FILE = "tests/dashboard/test_dashboard_browser.py"  # browser
LISTED_FILE = "tests/queue_core/test_embedded.py"  # listed by file
UNIT_FILE = "tests/pool/test_pool_units.py"
LISTED_TEST = "tests/queue_core/test_claim.py::test_concurrent_claimers_take_each_job_exactly_once"
MIXED_FILE = "tests/queue_core/test_claim.py"


def fast_lane_marks() -> str:
    """The `-m` expression of the Makefile's test-fast target."""
    found = re.search(r'^test-fast:.*\n(?:#.*\n)*\t[^\n]*-m "([^"]+)"',
                      (REPO / "Makefile").read_text(), re.M)
    assert found, "the Makefile's test-fast target runs no `pytest -m`"
    return found.group(1)


def collected(*args: str) -> list[str]:
    """The test ids pytest selects for these arguments, without running any."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_fast_lane_leaves_out_the_pool_and_slow_tests_and_keeps_the_rest() -> None:
    files = [POOL_FILE, FEATURE_POOL_FILE, BROWSER_FILE, LISTED_FILE, UNIT_FILE, MIXED_FILE]
    every = collected(*files)
    fast = collected("-m", fast_lane_marks(), *files)

    def of(tests: list[str], path: str) -> list[str]:
        return [t for t in tests if t.startswith(path + "::")]

    for path in (POOL_FILE, FEATURE_POOL_FILE, BROWSER_FILE, LISTED_FILE):
        assert of(every, path), f"{path} has no tests: choose another file for this test"
        assert not of(fast, path), f"make test-fast runs {path}"
    assert of(fast, UNIT_FILE) == of(every, UNIT_FILE)
    assert LISTED_TEST in every and LISTED_TEST not in fast
    assert set(of(fast, MIXED_FILE)) == set(of(every, MIXED_FILE)) - {LISTED_TEST}


def test_the_tables_that_hold_rows_are_emptied_and_only_those(database_url: str) -> None:
    sql("""INSERT INTO "WorkerJob" (type, payload) VALUES ('X', '{}')""")
    sql("""INSERT INTO "WorkerJobPause" (type) VALUES ('X')""")
    sql("""INSERT INTO "WorkerSchedule" (name, "lastOccurrence") VALUES ('s', now())""")
    sql('DELETE FROM "WorkerSchedule"')  # written, but no rows left
    # Many pages: emptied by a TRUNCATE, which gives the file back.
    sql("""INSERT INTO "WorkerJobPause" (type) SELECT 'T' || n FROM generate_series(1, 20000) n""")

    # The row is in the live part of "WorkerJob" (partitioned: docs/schema.md, "History").
    assert sorted(empty_written_tables()) == ['"WorkerJobLive"', '"WorkerJobPause"']
    assert sql('SELECT count(*) FROM "WorkerJob"') == [(0,)]
    assert sql('SELECT count(*) FROM "WorkerJobPause"') == [(0,)]
    assert sql("""SELECT pg_relation_size('"WorkerJobPause"')""") == [(0,)]
    assert empty_written_tables() == []
