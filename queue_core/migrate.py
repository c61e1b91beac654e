"""Apply the alembic migrations (`skiplock migrate`), or show what they would do.

The migrations are part of the package (`skiplock/migrations`, the
repository's `alembic/` folder), so an installed skiplock migrates its
database with no checkout and no alembic.ini around.
"""

from __future__ import annotations

import io

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from skiplock.queue_core.db import translate_errors
from skiplock.queue_core.errors import ConfigurationError
from skiplock.queue_core.urls import database_url

# alembic resolves "package:folder" through importlib, wherever the package is installed.
SCRIPT_LOCATION = "skiplock:migrations"


def alembic_config(url: str | None = None, output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output)
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # ConfigParser treats % as interpolation; a password may contain one.
    config.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    url = url or database_url()
    with translate_errors(url):
        command.upgrade(alembic_config(url), revision)


def upgrade_sql(from_revision: str | None = None, revision: str = "head") -> str:
    """The DDL that `upgrade` would run, as a script, without touching any database.

    From `from_revision` (None: an empty database) to `revision`; for teams
    that keep every schema change in their own migrations.
    """
    if from_revision is not None and from_revision not in revisions():
        raise ConfigurationError(f"no migration {from_revision!r}; the migrations are "
                                 f"{', '.join(revisions())}")
    output = io.StringIO()
    span = f"{from_revision}:{revision}" if from_revision else revision
    command.upgrade(alembic_config("postgresql://offline/skiplock", output), span, sql=True)
    return output.getvalue()


def current_revision(url: str | None = None) -> str | None:
    url = url or database_url()
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with translate_errors(url), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def revisions() -> list[str]:
    """Every migration's revision id, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused/x"))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://unused/x")).get_current_head()
