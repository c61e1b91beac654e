"""The job listing in the application itself (Flask's test client, the real database):
keyset pages in every status's order, the filters, and what a bad link gets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from skiplock.dashboard.app import create_app
from skiplock.dashboard.reads import _prefix_range
from skiplock.dashboard.settings import DashboardSettings
from skiplock.queue_core import enqueue_many
from tests.dashboard.helpers import sql


@pytest.fixture
def client() -> Any:
    return create_app(DashboardSettings(page_size=7)).test_client()


def walk(client: Any, url: str) -> list[str]:
    """Every job id the listing shows, following its `next` links to the end."""
    seen: list[str] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_data(as_text=True)
        seen += re.findall(r'<td class="id"><a href="/jobs/([^"]+)"', body)
        found = re.search(r'<a href="([^"]+)" rel="next">', body)
        url = found.group(1).replace("&amp;", "&") if found else ""
    return seen


def ids(statement: str) -> list[str]:
    return [r.id for r in sql(statement)]


def test_every_status_pages_by_keyset_in_its_index_order(client):
    jobs = enqueue_many([{"type": "DASH_OK", "payload": {"i": i}, "priority": i % 3,
                          "idempotency_key": f"k:{i:02}"} for i in range(40)])
    # Give finished rows equal completion times in pairs: ties are broken by id.
    sql("""UPDATE "WorkerJob" SET status = 'COMPLETED',
               "completedAt" = now() - (right(payload->>'i', 1)::int / 2) * interval '1 min'
           WHERE (payload->>'i')::int % 4 = 0""")
    sql("""UPDATE "WorkerJob" SET status = 'DEAD_LETTER', "completedAt" = now()
           WHERE (payload->>'i')::int % 4 = 1""")
    sql("""UPDATE "WorkerJob" SET "availableAt" = now() - interval '1 hour'
           WHERE (payload->>'i')::int % 4 = 2""")
    assert walk(client, "/jobs") == ids('SELECT id FROM "WorkerJob" ORDER BY id DESC')
    assert sorted(walk(client, "/jobs")) == sorted(jobs)
    assert walk(client, "/jobs?status=PENDING") == ids(
        """SELECT id FROM "WorkerJob" WHERE status = 'PENDING'
           ORDER BY priority DESC, "availableAt", id""")
    for status in ("COMPLETED", "DEAD_LETTER"):
        listed = walk(client, f"/jobs?status={status}")
        assert listed == ids(f"""SELECT id FROM "WorkerJob" WHERE status = '{status}'
                                 ORDER BY "completedAt" DESC, id DESC""")
        assert listed
    assert walk(client, "/jobs?status=FAILED") == []


def test_filters_by_type_user_key_prefix_and_time(client):
    sql("""INSERT INTO "User" (id, name, timezone) VALUES ('u1', 'one', 'UTC')""")
    enqueue_many([{"type": "DASH_OK", "payload": {}, "idempotency_key": key, "user_id": user}
                  for key, user in [("review:u1:2026-01", "u1"), ("review:u1:2026-02", "u1"),
                                    ("review_u1", None), ("review%u1", None), ("reviews", None),
                                    ("interpret:1", "u1")]])
    enqueue_many([{"type": "DASH_SLOW", "payload": {}}])

    def keys(url: str) -> set[str]:
        listed = walk(client, url)
        return {r.idempotencyKey for r in sql('SELECT "idempotencyKey" FROM "WorkerJob" '
                                             "WHERE id = ANY(:ids)", ids=listed)}

    assert keys("/jobs?key=review:") == {"review:u1:2026-01", "review:u1:2026-02"}
    assert keys("/jobs?key=review_") == {"review_u1"}  # _ and % are not wildcards
    assert keys("/jobs?key=review%25") == {"review%u1"}
    assert keys("/jobs?key=review") == {"review:u1:2026-01", "review:u1:2026-02", "review_u1",
                                        "review%u1", "reviews"}
    assert keys("/jobs?user=u1&key=review") == {"review:u1:2026-01", "review:u1:2026-02"}
    assert len(walk(client, "/jobs?type=DASH_SLOW")) == 1
    assert len(walk(client, "/jobs?since=2000-01-01T00:00&until=2999-01-01T00:00")) == 7
    assert walk(client, "/jobs?until=2000-01-01T00:00") == []
    assert _prefix_range("ab") == ("ab", "ac") and _prefix_range("\U0010ffff") is None


@pytest.mark.parametrize("url", ["/jobs?status=NOPE", "/jobs?since=yesterday",
                                 "/jobs?status=COMPLETED&after=garbage", "/jobs?after=%%%"])
def test_a_bad_filter_or_page_link_is_a_clear_400(client, url):
    response = client.get(url)
    assert response.status_code == 400
    assert '<p class="flash warn">' in response.get_data(as_text=True)


def test_a_search_finds_a_job_by_id_or_key(client):
    [job] = enqueue_many([{"type": "DASH_OK", "payload": {}, "idempotency_key": "find:me"}])
    for q in (job, "find:me"):
        response = client.get("/jobs", query_string={"q": q})
        assert response.status_code == 302 and response.headers["Location"] == f"/jobs/{job}"
    assert "No job has the id" in client.get("/jobs?q=nothing").get_data(as_text=True)
    assert client.get("/jobs/nothing").status_code == 404
