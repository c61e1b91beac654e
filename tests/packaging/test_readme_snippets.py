"""The README's "Using it from an application" snippets that run in-process, against the test
database, exactly as written and with the README's URL form (`postgresql://...`).

Under SQLAlchemy 2.1 (what `make venv` installs) `create_engine("postgresql://...")`
runs on psycopg 3, under 2.0 on psycopg2; tests/packaging/test_wheel.py runs the
same snippets in a virtualenv with SQLAlchemy 2.0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy

from tests.packaging.snippets import ENQUEUE_SNIPPETS, SIGNUP_TABLE, readme_url, snippet
from tests.queue_core.helpers import sql


@pytest.fixture
def signup_table(database_url: str) -> Iterator[None]:
    sql(SIGNUP_TABLE)
    yield
    sql("DROP TABLE signup")


@pytest.mark.parametrize("name", ENQUEUE_SNIPPETS)
def test_an_enqueue_snippet_commits_the_job_with_the_applications_row(
        name: str, database_url: str, signup_table: None) -> None:
    url = readme_url(database_url)
    assert url.startswith("postgresql://")
    scope = {"DATABASE_URL": url}
    exec(snippet(name), scope)
    if "engine" in scope:
        scope["engine"].dispose()
    [(job_type, payload, key)] = sql('SELECT type, payload, "idempotencyKey" FROM "WorkerJob" '
                                     "WHERE id = :id", id=scope["job_id"])
    [(user, email)] = sql("SELECT id, email FROM signup")
    assert (job_type, key) == ("SEND_EMAIL", f"welcome:{user}")
    assert payload == {"to": email}


def test_the_session_snippet_runs_on_the_driver_sqlalchemy_picks(database_url: str,
                                                                 signup_table: None) -> None:
    scope = {"DATABASE_URL": readme_url(database_url)}
    exec(snippet("enqueue-session"), scope)
    major, minor = (int(part) for part in sqlalchemy.__version__.split(".")[:2])
    expected = "psycopg" if (major, minor) >= (2, 1) else "psycopg2"
    assert scope["engine"].dialect.driver == expected
    scope["engine"].dispose()


def test_the_workflow_snippet_makes_a_fan_in_and_a_batch(database_url: str) -> None:
    from skiplock.queue_core import claim, complete

    scope: dict[str, object] = {}
    exec(snippet("workflow"), scope)
    merge_id = scope["merge_id"]
    [(held, waiting)] = sql('SELECT "heldBack", "waitingFor" FROM "WorkerJob" WHERE id = :id',
                            id=merge_id)
    assert (held, waiting) == (False, 3)
    batch = scope["batch"]
    for job in claim("w", limit=10, types=["FETCH_PART", "BUILD_REPORT"]):
        complete(job)
    ready = {j.type: j for j in claim("w", limit=10, types=["MERGE_PARTS", "REPORT_SENT"])}
    assert ready["MERGE_PARTS"].id == merge_id
    assert ready["REPORT_SENT"].payload["batch"]["completed"] == 2
    exec(snippet("workflow"), {})  # the batch again: nothing new for the batch
    assert sql('SELECT count(*) FROM "WorkerJob" WHERE type = \'BUILD_REPORT\'')[0][0] == 2
    assert scope["batch"] is batch
