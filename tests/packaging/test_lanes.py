"""The empty tables every test starts from (tests/conftest.py)."""

from __future__ import annotations

from tests.conftest import empty_written_tables
from tests.queue_core.helpers import sql


def test_the_tables_written_since_they_were_emptied_are_emptied_and_only_those(
        database_url: str) -> None:
    sql("""INSERT INTO "WorkerJob" (type, payload) VALUES ('X', '{}')""")
    sql("""INSERT INTO "WorkerJobPause" (type) VALUES ('X')""")
    sql('DELETE FROM "WorkerJobPause"')  # no rows left, but the table was written

    assert sorted(empty_written_tables()) == ['"WorkerJob"', '"WorkerJobPause"']
    assert sql('SELECT count(*) FROM "WorkerJob"') == [(0,)]
    assert empty_written_tables() == []
