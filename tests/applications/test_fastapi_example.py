"""examples/fastapi_app against the real database: the signup and its job in one request
transaction, the job's outcome awaited with a timeout, the health endpoint; and with a
real worker pool running the job."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from examples.fastapi_app.app import create_app
from skiplock.queue_core.database import db
from tests.pool.conftest import Pool
from tests.queue_core.helpers import count, row, sql
from tests.support import free_port, wait_for

HANDLERS = "examples.fastapi_app.jobs"


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    sql("DROP TABLE IF EXISTS signup")  # the example's own, with its unique email
    with TestClient(create_app(database_url)) as client:
        yield client
    sql("DROP TABLE signup")


def test_a_signup_and_its_job_commit_together_and_a_duplicate_leaves_neither(
        client: TestClient) -> None:
    made = client.post("/signups", json={"email": "ada@example.com"})
    assert made.status_code == 201, made.text
    user_id, job_id = made.json()["id"], made.json()["job_id"]
    job = row(job_id)
    assert (job.type, job.payload, job.idempotencyKey, job.userId, job.st) == (
        "SEND_EMAIL", {"to": "ada@example.com"}, f"welcome:{user_id}", user_id, "PENDING")
    # The job was enqueued before the insert that fails: the rollback takes it too.
    again = client.post("/signups", json={"email": "ada@example.com"})
    assert again.status_code == 409
    assert count() == 1
    assert sql("SELECT id FROM signup") == [(user_id,)]


def test_a_job_nobody_runs_times_out_with_504(client: TestClient) -> None:
    job_id = client.post("/signups", json={"email": "grace@example.com"}).json()["job_id"]
    late = client.get(f"/jobs/{job_id}", params={"timeout": 0.2})
    assert late.status_code == 504
    assert late.json()["detail"] == f"job {job_id} is still PENDING after 0.2s"
    assert client.get("/jobs/no-such-job", params={"timeout": 1}).status_code == 404
    for timeout in ("nan", "-1", "61", "soon"):
        assert client.get(f"/jobs/{job_id}", params={"timeout": timeout}).status_code == 422


def test_health_reports_the_queue_and_503_without_a_database(client: TestClient,
                                                             database_url: str) -> None:
    client.post("/signups", json={"email": "hedy@example.com"})
    health = client.get("/health")
    assert health.status_code == 200
    figures = health.json()
    assert (figures["status"], figures["pools"], figures["ready"]) == ("ok", 0, 1)
    assert figures["unserved"] == {"SEND_EMAIL": 1}
    nobody = make_url(database_url).set(host="127.0.0.1", port=free_port())
    try:
        db.get_engine(nobody.render_as_string(hide_password=False))
        down = client.get("/health")
    finally:
        db.reset_engine()
        db.get_engine(database_url)
    assert (down.status_code, down.json()) == (503, {"status": "unavailable"})


def test_with_a_worker_pool_the_request_gets_the_jobs_result(
        client: TestClient, start_pool: Callable[..., Pool]) -> None:
    pool = start_pool("--concurrency", "1", handlers=HANDLERS)
    job_id = client.post("/signups", json={"email": "mary@example.com"}).json()["job_id"]
    outcome = client.get(f"/jobs/{job_id}", params={"timeout": 30})
    assert outcome.status_code == 200, pool.log()
    assert outcome.json() == {"id": job_id, "status": "COMPLETED",
                              "result": {"sent_to": "mary@example.com"}, "error": None}
    health = wait_for(lambda: (h := client.get("/health").json())["pools"] == 1 and h, 15,
                      "the pool in the health figures")
    assert (health["status"], health["ready"], health["unserved"]) == ("ok", 0, {})
