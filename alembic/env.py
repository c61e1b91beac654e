"""Alembic environment: the URL of skiplock's configuration, one migrator at a time.

skiplock records its revisions in a table of its own, `skiplock_version`,
not in alembic's default `alembic_version`: an application that migrates
its own schema with alembic has an `alembic_version` of its own, and the two
must never read each other's revision (`queue_core/database/migrate.py`).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from skiplock.queue_core.database import migrate
from skiplock.queue_core.database.urls import database_url

# Several hosts may start `skiplock migrate` at once: the first takes this lock,
# the others wait and then find nothing left to do.
MIGRATION_LOCK = 0x736B69706C6F636B  # "skiplock"


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or database_url()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # One transaction for every step: a migration that fails leaves the
        # database as it found it, adoption of a table Prisma made included.
        context.configure(connection=connection, transaction_per_migration=False,
                          version_table=migrate.VERSION_TABLE)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
            connection.execute(text(migrate.MOVE_LEGACY_VERSION))
            context.run_migrations()
    engine.dispose()


def run_migrations_offline() -> None:
    # Named parameters: with psycopg2's own style, a printed script would have every
    # % of the DDL doubled (format('%I', ...) in a DO block).
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, version_table=migrate.VERSION_TABLE)
    with context.begin_transaction():
        if context.config.attributes.get("from_revision"):
            # A script that upgrades a database from a revision may meet one that an
            # older skiplock recorded in alembic_version.
            context.execute(migrate.MOVE_LEGACY_VERSION)
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
