"""The overview lists the types that no running pool serves (Flask's test client, the
real database, the process table as live masters write it)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from skiplock.dashboard.app import create_app
from skiplock.dashboard.settings import DashboardSettings
from skiplock.ops import processes
from skiplock.queue_core import enqueue
from skiplock.queue_core.features import parking
from tests.dashboard.helpers import sql


@pytest.fixture
def client() -> Any:
    return create_app(DashboardSettings()).test_client()


def type_row(body: str, job_type: str) -> str:
    found = re.search(rf'<tr data-type="{job_type}">(.*?)</tr>', body, re.S)
    assert found, body
    return found.group(1)


def test_the_overview_marks_the_types_no_running_pool_serves(client):
    processes.beat("m1", host="h", pid=1, started_at=0.0, state="running", concurrency=2,
                   children=[], served=["DASH_SERVED"])
    enqueue("DASH_SERVED", {})
    waiting = [enqueue("SEND_DIGEST", {"i": i}) for i in range(3)]
    sql("""UPDATE "WorkerJob" SET "availableAt" = now() - interval '1 hour'
           WHERE id = ANY(:ids)""", ids=waiting)
    assert parking.park_unserved(["DASH_SERVED"], live_s=30, grace_s=60) == {"SEND_DIGEST": 3}
    enqueue("SEND_DIGEST", {"i": 3})  # not yet parked

    for url in ("/", "/?fragment=1"):  # the page, and what its refresh fetches
        body = client.get(url).get_data(as_text=True)
        assert "NO POOL" in type_row(body, "SEND_DIGEST")
        assert "NO POOL" not in type_row(body, "DASH_SERVED")
        assert re.search(r"Served by no running pool \(1 running\), waiting for one: "
                         r'<span data-unserved="SEND_DIGEST">SEND_DIGEST \(4 pending, '
                         r"3 parked\)</span>", body), body

    sql('DELETE FROM "WorkerProcess"')  # no pool at all: every type waits
    body = client.get("/").get_data(as_text=True)
    assert "NO POOL" in type_row(body, "DASH_SERVED")
    assert "Served by no running pool (0 running)" in body
