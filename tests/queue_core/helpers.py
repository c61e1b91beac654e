"""Small helpers for queue tests: read the table directly with SQL."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import psycopg2
from sqlalchemy import TextClause, text

from skiplock.queue_core.database import db
from skiplock.queue_core.database.urls import libpq_dsn


def sql(statement: str, **params: Any) -> list[Any]:
    with db.get_engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return result.fetchall() if result.returns_rows else []


def plan(statement: TextClause, params: dict[str, Any], *, big_table: bool = False) -> str:
    """EXPLAIN of a statement as the driver sends it (psycopg2 binds client-side).
    `big_table`: as on a table too big to read whole (a table of a few hundred rows is
    read whole by any plan)."""
    with db.get_engine().begin() as conn:
        if big_table:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
        found = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + statement.text), params))
        conn.rollback()
    return found


def row(job_id: str) -> Any:
    rows = sql('SELECT *, status::text AS st FROM "WorkerJob" WHERE id = :id', id=job_id)
    return rows[0] if rows else None


def count(where: str = "true", **params: Any) -> int:
    return int(sql(f'SELECT count(*) FROM "WorkerJob" WHERE {where}', **params)[0][0])


def age_lock(job_id: str, seconds: float) -> None:
    """Pretend the job's last heartbeat was `seconds` ago."""
    sql('UPDATE "WorkerJob" SET "lockedAt" = now() - make_interval(secs => :s) WHERE id = :id',
        s=seconds, id=job_id)


def empty(url: str) -> None:
    """The database at `url` as new: an empty public schema."""
    with psycopg2.connect(libpq_dsn(url)) as conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public; "
                    "COMMENT ON SCHEMA public IS 'standard public schema'")
    conn.close()


def run_script(url: str, script: str) -> None:
    """SQL as psql would run a file of it (one transaction here), on its own connection."""
    with psycopg2.connect(libpq_dsn(url)) as conn, conn.cursor() as cur:
        cur.execute(script)
    conn.close()


def schema_of(url: str, *tables: str) -> str:
    """pg_dump's schema of the database (or of these tables), without its comment lines."""
    pg_dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    only = [arg for table in tables for arg in ("--table", f'public."{table}"')]
    dump = subprocess.run([pg_dump, "--schema-only", "--no-owner", "--no-privileges", *only,
                           libpq_dsn(url)], capture_output=True, text=True, check=True).stdout
    # Comment lines name the database dump itself; the objects are what must agree.
    return "\n".join(line for line in dump.splitlines()
                     if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict")))
