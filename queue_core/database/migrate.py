"""Apply the alembic migrations (`skiplock migrate`), or show what they would do.

The migrations are part of the package (`skiplock/migrations`, the
repository's `alembic/` folder), so an installed skiplock migrates its
database with no checkout and no alembic.ini around.

Two independent branches live there:

- `skiplock`: the queue's own objects (the job table, its types, triggers and
  functions, the process, pause, schedule and concurrency-key tables, the
  dashboard's action log). `skiplock migrate` installs this one only, and it
  touches no other table: an application's own "User" or "Event" stays as it
  is. Its first step adopts a "WorkerJob" that Prisma made from the original
  service's models (alembic/versions/0001_job_table.py).
- `demo`: the stand-in domain the built-in handlers of that service's six job
  types work on ("User", "Event", "Interpretation", ...). Opt-in: `skiplock migrate
  --demo`, `skiplock demo`, and `make worker` / `make demo` in a checkout.

The revisions are recorded in `skiplock_version`, never in `alembic_version`,
which an application's own alembic owns. A database that an older skiplock
migrated has its revision in `alembic_version`; the first migration moves it
(`MOVE_LEGACY_VERSION`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, pool, text

from skiplock.queue_core.database.db import translate_errors
from skiplock.queue_core.database.urls import database_url
from skiplock.queue_core.errors import ConfigurationError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# alembic is imported where it is used: a pool reads `demo_installed` at boot and
# need not pay for loading alembic in every master (docs/benchmarks.md, "Figures
# behind the code").

# alembic resolves "package:folder" through importlib, wherever the package is installed.
SCRIPT_LOCATION = "skiplock:migrations"
VERSION_TABLE = "skiplock_version"
QUEUE = "skiplock"  # the branch labels
DEMO = "demo"
DEMO_BASE = "demo_0001_domain"
# `--sql --from prisma`: the upgrade of a database whose "WorkerJob" Prisma made.
FROM_PRISMA = "prisma"
# Every table the `skiplock` branch creates (a test holds this to what it does).
QUEUE_TABLES = ("WorkerJob", "WorkerJobLive", "WorkerJobHistory", "WorkerJobPause",
                "WorkerProcess", "WorkerSchedule", "WorkerConcurrencyKey", "DashboardAction",
                "WorkerJobDependency", "WorkerBatch",
                "WorkerSequence", "WorkerFairKey", "WorkerTypePolicy", "WorkerRateKey",
                "WorkerRateToken", VERSION_TABLE)

# Every revision an older skiplock could have written into alembic_version.
# Each of them but the first came after the domain tables, which that skiplock
# created with the queue: such a database has the demo domain installed.
LEGACY_REVISIONS = ("0001_job_table", "0002_domain", "0003_ops", "0004_prisma_types",
                    "0010_dashboard", "0007_accounting", "0005_features",
                    "0011_notify_in_statement")
_LEGACY = ", ".join(f"'{r}'" for r in LEGACY_REVISIONS)

# Idempotent, and the same text online and in a printed script. The table's
# shape is the one alembic itself creates (its primary key's name included).
MOVE_LEGACY_VERSION = f"""
DO $$
BEGIN
    -- Nested: PL/pgSQL plans a whole condition at once, and alembic_version may not exist.
    IF to_regclass('{VERSION_TABLE}') IS NULL AND to_regclass('alembic_version') IS NOT NULL THEN
        IF EXISTS (SELECT FROM alembic_version WHERE version_num IN ({_LEGACY})) THEN
            CREATE TABLE {VERSION_TABLE} (
                version_num varchar(32) NOT NULL,
                CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num));
            INSERT INTO {VERSION_TABLE}
                SELECT version_num FROM alembic_version WHERE version_num IN ({_LEGACY});
            IF to_regclass('"Interpretation"') IS NOT NULL AND NOT EXISTS (
                    SELECT FROM {VERSION_TABLE} WHERE version_num = '0001_job_table') THEN
                INSERT INTO {VERSION_TABLE} VALUES ('{DEMO_BASE}');
            END IF;
            DELETE FROM alembic_version WHERE version_num IN ({_LEGACY});
            IF NOT EXISTS (SELECT FROM alembic_version) THEN
                DROP TABLE alembic_version;
            END IF;
        END IF;
    END IF;
END $$
"""

# The online part of revision 0022_history (see there), before the one transaction of
# alembic: the column (a fast default: no rewrite), then the CHECK that proves the live
# part's bound to the ATTACH, added NOT VALID (a brief lock) and validated (a scan under
# SHARE UPDATE EXCLUSIVE: enqueues, claims and updates go on). Each step is idempotent,
# so a `skiplock migrate` that stopped half way resumes; 0022 runs them again (nothing
# left to do) where they ran here, and in its transaction where they did not.
HISTORY_PREPARE = (
    """ALTER TABLE "WorkerJob" ADD COLUMN IF NOT EXISTS "archivedAt" timestamptz NOT NULL
           DEFAULT 'infinity'""",
    """
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'WorkerJob_live_check'
                       AND conrelid = '"WorkerJob"'::regclass) THEN
            ALTER TABLE "WorkerJob" ADD CONSTRAINT "WorkerJob_live_check"
                CHECK ("archivedAt" >= 'infinity') NOT VALID;
        END IF;
    END $$
    """,
    'ALTER TABLE "WorkerJob" VALIDATE CONSTRAINT "WorkerJob_live_check"',
)
_PLAIN_JOB_TABLE = text("""
    SELECT EXISTS (SELECT FROM pg_class WHERE oid = to_regclass('"WorkerJob"') AND relkind = 'r')
""")
HISTORY_REVISION = "0022_history"
# The revision the online steps start from: from an older one, the revisions between add
# columns, which must come before "archivedAt" as in a fresh install.
HISTORY_BEFORE = "0021_fairness"


_CURRENT = text(f"""
    SELECT version_num FROM {VERSION_TABLE}
""")
# What an older skiplock recorded, before the first migration moves it.
_CURRENT_LEGACY = text(f"""
    SELECT version_num FROM alembic_version WHERE version_num IN ({_LEGACY})
""")
_TABLES = text("""
    SELECT to_regclass(:version) IS NOT NULL AS ours, to_regclass('alembic_version') IS NOT NULL AS legacy
""")


@dataclass
class Upgraded:
    """What `upgrade` did: the revisions before and after, and what the steps said."""

    before: list[str]
    after: list[str]
    notes: list[str] = field(default_factory=list)


def alembic_config(url: str | None = None, output: io.StringIO | None = None) -> Config:
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # ConfigParser treats % as interpolation; a password may contain one.
    config.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    config.attributes["notes"] = []
    return config


def upgrade(url: str | None = None, revision: str | None = None, *,
            demo: bool = False) -> Upgraded:
    """Bring the queue's schema (and with `demo`, the demo domain) to the latest revision.

    `revision` stops at an older revision of the queue (tests use it to make
    a database as an older skiplock left it).
    """
    url = url or database_url()
    before = current_revisions(url)
    target = revision or ("heads" if demo else f"{QUEUE}@head")
    from alembic import command

    config = alembic_config(url)
    with translate_errors(url):
        if HISTORY_BEFORE in before and revision in (None, HISTORY_REVISION):
            prepare_history(url)
        command.upgrade(config, target)
    return Upgraded(before, current_revisions(url), list(config.attributes["notes"]))


def prepare_history(url: str) -> None:
    """`HISTORY_PREPARE` on a "WorkerJob" that is still a plain table, each step in a
    transaction of its own (a no-op on a database without one, or past 0022)."""
    engine = create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if not conn.execute(_PLAIN_JOB_TABLE).scalar():
                return
            for step in HISTORY_PREPARE:
                conn.execute(text(step))
    finally:
        engine.dispose()


def upgrade_sql(from_revision: str | None = None, *, demo: bool = False) -> str:
    """The DDL that `upgrade` would run, as a script, without touching any database.

    From `from_revision` (None: an empty database; `prisma`: a database whose
    "WorkerJob" Prisma made from the original service's models, which the script adopts)
    to the latest revision; for teams that keep every schema change in their
    own migrations.
    """
    from alembic import command

    output = io.StringIO()
    config = alembic_config("postgresql://offline/skiplock", output)
    if from_revision == FROM_PRISMA:
        config.attributes["adopt"] = FROM_PRISMA
        span = f"{QUEUE}@head"
    elif from_revision is not None:
        if from_revision not in revisions():
            raise ConfigurationError(
                f"no migration {from_revision!r}; the migrations are {', '.join(revisions())}, "
                f"or {FROM_PRISMA!r} for a table Prisma made")
        config.attributes["from_revision"] = from_revision
        span = f"{from_revision}:{QUEUE}@head"
    else:
        span = f"{QUEUE}@head"
    command.upgrade(config, span, sql=True)
    if demo:
        command.upgrade(config, f"{DEMO}@head", sql=True)
    return output.getvalue()


def current_revisions(url: str | None = None) -> list[str]:
    """The revisions the database is at (one per installed branch), oldest skiplock's too."""
    url = url or database_url()
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with translate_errors(url), engine.connect() as conn:
            return read_revisions(conn)
    finally:
        engine.dispose()


def read_revisions(conn: Any) -> list[str]:
    ours, legacy = conn.execute(_TABLES, {"version": VERSION_TABLE}).one()
    if ours:
        return sorted(conn.execute(_CURRENT).scalars())
    if legacy:
        return sorted(conn.execute(_CURRENT_LEGACY).scalars())
    return []


def demo_installed(conn: Any) -> bool:
    """Whether the built-in handlers' stand-in domain is installed (revisions of `demo`)."""
    return any(r.startswith("demo_") for r in read_revisions(conn))


def behind(revisions_now: Iterable[str]) -> list[str]:
    """The heads a database at `revisions_now` lacks: the queue's, and the demo's if installed."""
    now = set(revisions_now)
    wanted = [queue_head()]
    if any(r.startswith("demo_") for r in now):
        wanted.append(demo_head())
    return [head for head in wanted if head not in now]


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("postgresql://unused/x"))


def revisions() -> list[str]:
    """Every migration's revision id, oldest first (the queue's, then the demo's)."""
    script = _script()
    ordered = [s.revision for s in reversed(list(script.walk_revisions(head=f"{QUEUE}@head")))]
    ordered += [s.revision for s in reversed(list(script.walk_revisions(head=f"{DEMO}@head")))]
    return ordered


def queue_head() -> str:
    return _head(QUEUE)


def demo_head() -> str:
    return _head(DEMO)


def _head(branch: str) -> str:
    [head] = _script().get_revisions(f"{branch}@head")
    assert head is not None
    return head.revision
