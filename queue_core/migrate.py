"""Apply the alembic migrations (`skiplock migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from alembic import command
from queue_core.db import translate_errors
from queue_core.urls import database_url

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    # ConfigParser treats % as interpolation; a password may contain one.
    config.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    url = url or database_url()
    with translate_errors(url):
        command.upgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    url = url or database_url()
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with translate_errors(url), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://unused/x")).get_current_head()
