"""The seed's service writes and reads "WorkerJob" through a Prisma client: its SQL must run.

The statements below are written the way Prisma 5/6's query engine writes
them for the seed's `schema.prisma` (`prisma.workerJob.create`, `findMany`,
`updateMany`, `count`): enum-typed values are sent as text and cast to
"public"."JobType" / "public"."JobStatus", in VALUES and in WHERE clauses, and
every column is schema-qualified.
"""

from __future__ import annotations

import json
import uuid

import psycopg2
import pytest

from skiplock.queue_core import claim, complete
from skiplock.queue_core.database.urls import libpq_dsn

PRISMA_CREATE = """
INSERT INTO "public"."WorkerJob" ("id","type","payload","status","priority","availableAt",
  "attempts","maxAttempts","idempotencyKey","userId","createdAt")
VALUES (%s,CAST(%s::text AS "public"."JobType"),%s,CAST(%s::text AS "public"."JobStatus"),%s,%s,
  %s,%s,%s,%s,%s)
RETURNING "public"."WorkerJob"."id", "public"."WorkerJob"."type"::text,
  "public"."WorkerJob"."payload", "public"."WorkerJob"."status"::text
"""

PRISMA_FIND_MANY = """
SELECT "public"."WorkerJob"."id", "public"."WorkerJob"."type"::text, "public"."WorkerJob"."status"::text
FROM "public"."WorkerJob"
WHERE ("public"."WorkerJob"."type" = CAST(%s::text AS "public"."JobType")
  AND "public"."WorkerJob"."status" IN (CAST(%s::text AS "public"."JobStatus"),
                                        CAST(%s::text AS "public"."JobStatus")))
ORDER BY "public"."WorkerJob"."createdAt" DESC OFFSET %s
"""

PRISMA_UPDATE_MANY = """
UPDATE "public"."WorkerJob" SET "status" = CAST(%s::text AS "public"."JobStatus"),
  "attempts" = %s, "availableAt" = %s
WHERE ("public"."WorkerJob"."status" = CAST(%s::text AS "public"."JobStatus")
  AND "public"."WorkerJob"."type" IN (CAST(%s::text AS "public"."JobType")))
"""

PRISMA_COUNT = """
SELECT COUNT(*) FROM (SELECT "public"."WorkerJob"."id" FROM "public"."WorkerJob"
WHERE "public"."WorkerJob"."type" = CAST(%s::text AS "public"."JobType") OFFSET %s) AS "sub"
"""


def prisma_connection(database_url: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(libpq_dsn(database_url))


def create(cur: psycopg2.extensions.cursor, job_type: str, key: str | None = None) -> str:
    job_id = "c" + uuid.uuid4().hex[:24]  # a cuid-like id, as Prisma's @default(cuid())
    cur.execute(PRISMA_CREATE, (job_id, job_type, json.dumps({"eventId": "evt_1"}), "PENDING", 0,
                                "2026-01-01 00:00:00.000", 0, 3, key, None,
                                "2026-01-01 00:00:00.000"))
    row = cur.fetchone()
    assert row is not None and row[0] == job_id and row[1] == job_type and row[3] == "PENDING"
    return job_id


@pytest.mark.parametrize("job_type", ["INTERPRET_EVENT", "SEND_EMAIL"])
def test_a_prisma_insert_is_claimed_and_completed_by_skiplock(database_url, job_type):
    with prisma_connection(database_url) as conn, conn.cursor() as cur:
        job_id = create(cur, job_type, key=f"prisma:{job_type}")
    [job] = claim("w-prisma", types=[job_type])
    assert job.id == job_id and job.type == job_type and job.payload == {"eventId": "evt_1"}
    assert complete(job)


def test_prisma_reads_updates_and_counts_by_type_and_status(database_url):
    with prisma_connection(database_url) as conn, conn.cursor() as cur:
        first = create(cur, "SEND_EMAIL")
        create(cur, "INTERPRET_EVENT")
        cur.execute(PRISMA_FIND_MANY, ("SEND_EMAIL", "PENDING", "PROCESSING", 0))
        assert [(r[0], r[1], r[2]) for r in cur.fetchall()] == [(first, "SEND_EMAIL", "PENDING")]
        cur.execute(PRISMA_COUNT, ("INTERPRET_EVENT", 0))
        assert cur.fetchone()[0] == 1
        cur.execute(PRISMA_UPDATE_MANY, ("DEAD_LETTER", 3, "2026-01-01 00:00:00.000", "PENDING",
                                         "SEND_EMAIL"))
        assert cur.rowcount == 1
        cur.execute(PRISMA_FIND_MANY, ("SEND_EMAIL", "DEAD_LETTER", "FAILED", 0))
        assert [r[0] for r in cur.fetchall()] == [first]


def test_an_invalid_status_is_still_refused(database_url):
    with prisma_connection(database_url) as conn, conn.cursor() as cur, \
            pytest.raises(psycopg2.errors.InvalidTextRepresentation):
        cur.execute("""SELECT CAST(%s::text AS "public"."JobStatus")""", ("RUNNING",))
