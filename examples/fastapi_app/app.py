"""A FastAPI application on skiplock's async API (README in this folder).

- POST /signups: the application's row and the welcome email's job, in the
  request's one transaction (SQLAlchemy AsyncSession on psycopg 3);
- GET /jobs/{job_id}?timeout=10: the job's outcome once it has finished, or
  504 when it has not within the timeout;
- GET /health: the database answers, and what the queue looks like
  (skiplock's own `skiplock stats` figures).

Serve it with `uvicorn --factory examples.fastapi_app.app:create_app`, and run
its jobs with `skiplock worker --handlers examples.fastapi_app.jobs`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

import skiplock
from skiplock.ops.health import collect
from skiplock.queue_core import DatabaseUnavailable, JobNotFound, WaitTimeout
from skiplock.queue_core.database.urls import database_url

# The application's own table: created here so that the example runs as it is.
SIGNUP_TABLE = """
CREATE TABLE IF NOT EXISTS signup (id text PRIMARY KEY, email text NOT NULL UNIQUE)
"""


class Signup(BaseModel):
    email: str


def create_app(url: str | None = None) -> FastAPI:
    """The application, on the database at `url` (default: the one skiplock uses,
    DATABASE_URL), reached through psycopg 3's async driver."""
    async_url = make_url(url or database_url()).set(drivername="postgresql+psycopg")
    engine = create_async_engine(async_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.execute(text(SIGNUP_TABLE))
        yield
        await engine.dispose()

    app = FastAPI(title="skiplock example", lifespan=lifespan)

    @app.post("/signups", status_code=201)
    async def sign_up(signup: Signup) -> dict[str, str]:
        user_id = uuid.uuid4().hex
        try:
            async with sessions() as session, session.begin():
                # One transaction: the job exists only if the signup commits. The
                # order does not matter: a duplicate email below rolls the job back too.
                job_id = await skiplock.aenqueue(
                    "SEND_EMAIL", {"to": signup.email}, conn=session,
                    idempotency_key=f"welcome:{user_id}", user_id=user_id)
                await session.execute(text("INSERT INTO signup (id, email) VALUES (:id, :email)"),
                                      {"id": user_id, "email": signup.email})
        except sa_exc.IntegrityError:
            raise HTTPException(409, f"{signup.email} has signed up already") from None
        return {"id": user_id, "job_id": job_id}

    @app.get("/jobs/{job_id}")
    async def job_outcome(job_id: str,
                          timeout: float = Query(10.0, ge=0, le=60)) -> dict[str, Any]:
        try:
            job = await skiplock.await_result(job_id, timeout=timeout)
        except WaitTimeout as exc:
            raise HTTPException(504, str(exc)) from None
        except JobNotFound:
            raise HTTPException(404, f"no job {job_id}") from None
        return {"id": job.id, "status": job.status, "result": job.result,
                "error": job.last_error}

    # A plain `def`: skiplock's health figures are read on its blocking engine, which
    # FastAPI runs on its thread pool, out of the event loop's way.
    @app.get("/health")
    def health(response: Response) -> dict[str, Any]:
        try:
            figures = collect()
        except DatabaseUnavailable:
            response.status_code = 503
            return {"status": "unavailable"}
        return {"status": "ok", "pools": figures.pools, "ready": figures.ready,
                "oldestReadyAgeSeconds": figures.oldest_ready_age_s,
                "deadLetter": figures.counts.get("DEAD_LETTER", 0),
                "unserved": figures.unserved}

    return app
